"""Per-row prefixes of one batch (a `RowModules`): every row carries its own task's prefix as
virtual key/value positions, so rows of different tasks share one pass.

Padded passes hand the rows' prefixes to the backbone as its cache (`RowPrefix.past`); packed
passes hold each prefix once per packed row (`RowPrefix.packed`, `continual.modules.prefix.packed`).
A prefix changes no activation directly, so its `hooks` are a null context.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from torch import nn

from continual.modules.base import PackedModules, Past, padded_bank
from continual.modules.prefix.config import PrefixConfig
from continual.modules.prefix.packed import bank_past, columns, row_banks
from tasks.errors import ConfigError


@dataclass
class RowPrefix:
    """Per-row prefixes of one batch, ready for a forward pass.

    rows `[B, P_max, flat_dim]`; mask `[B, P_max]` (1 on real prefix positions; shorter prefixes
    are zero-padded and masked); offset `[B]`, where each row's input positions start (its prefix
    length under the "shifted" convention, 0 under "explicit").
    """

    rows: torch.Tensor
    mask: torch.Tensor
    offset: torch.Tensor
    layers: int
    kv_heads: int
    head_dim: int
    # The distinct prefixes `[n, P_max, flat_dim]` and each row's index into them `[B]`, so a
    # packed pass (`continual.packing`) holds every prefix once however many rows use it.
    # None: every row is its own prefix.
    bank: torch.Tensor | None = None
    task: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> RowPrefix:
        """The prefixes of rows `index` (rows may repeat), e.g. one per label candidate."""
        return replace(
            self,
            rows=self.rows[index],
            mask=self.mask[index],
            offset=self.offset[index],
            task=None if self.task is None else self.task[index],
        )

    def distinct(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(bank `[n, P_max, flat_dim]`, row -> bank index `[B]`): each prefix once."""
        if self.bank is not None and self.task is not None:
            return self.bank, self.task
        return self.rows, torch.arange(self.rows.shape[0])

    def groups(self) -> torch.Tensor:
        return self.distinct()[1]

    def past(self) -> Past:
        """Per layer (key, value), each `[B, kv_heads, P, head_dim]`: views, no copy.

        `unbind` rather than indexing: the backward of 2·layers index ops would build a
        zero-filled gradient of the whole prefix for each of them and add them up (measured:
        the largest single cost of a minilm training step); `unbind`'s backward is one stack.
        """
        b, p, _ = self.rows.shape
        view = self.rows.view(b, p, self.layers, 2, self.kv_heads, self.head_dim)
        view = view.permute(2, 3, 0, 4, 1, 5)  # [layers, 2, B, kv_heads, P, head_dim]
        return [(k, v) for k, v in (layer.unbind(0) for layer in view.unbind(0))]

    def packed(self, segment: torch.Tensor, row: torch.Tensor) -> PackedModules:
        bank, task = self.distinct()
        banks = row_banks(int(segment.shape[0]), row, bank, task)
        past = bank_past(
            bank, banks, layers=self.layers, kv_heads=self.kv_heads, head_dim=self.head_dim
        )
        return PackedModules(columns(segment, self.mask, task, banks), past)

    def hooks(
        self, model: nn.Module, token_row: torch.Tensor
    ) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def stack_rows(
    prefixes: list[tuple[torch.Tensor, PrefixConfig]], row_task: torch.Tensor
) -> RowPrefix:
    """Per-row prefixes for a batch whose rows may belong to different tasks.

    prefixes: one (flat `[P_t, flat_dim]`, config) per task; lengths and position conventions
    may differ, shapes per layer may not. row_task: `[B]` index into `prefixes` for each row.
    """
    first = prefixes[0][1]
    for _, c in prefixes:
        if (c.layers, c.kv_heads, c.head_dim) != (first.layers, first.kv_heads, first.head_dim):
            raise ConfigError("prefixes of one batch must be for the same backbone geometry")
    bank, mask = padded_bank([t for t, _ in prefixes])
    offset = torch.tensor(
        [t.shape[0] if c.positions == "shifted" else 0 for t, c in prefixes], dtype=torch.long
    )
    return RowPrefix(
        rows=bank[row_task],
        mask=mask[row_task],
        offset=offset[row_task],
        layers=first.layers,
        kv_heads=first.kv_heads,
        head_dim=first.head_dim,
        bank=bank,
        task=row_task,
    )


def single(prefix: torch.Tensor, config: PrefixConfig, batch_size: int) -> RowPrefix:
    """The same prefix on every row of a batch (training and single-task evaluation).

    The rows are an `expand` of the one prefix (stride 0 over the batch), not a gathered copy:
    no `[B, P, flat_dim]` copy forward, and the backward is a sum over the batch instead of an
    index_put.
    """
    p = int(prefix.shape[0])
    rows = prefix.unsqueeze(0).expand(batch_size, -1, -1)
    mask = torch.ones(batch_size, p, dtype=torch.long)
    offset = torch.full((batch_size,), p if config.positions == "shifted" else 0, dtype=torch.long)
    return RowPrefix(
        rows=rows,
        mask=mask,
        offset=offset,
        layers=config.layers,
        kv_heads=config.kv_heads,
        head_dim=config.head_dim,
        bank=prefix.unsqueeze(0),
        task=torch.zeros(batch_size, dtype=torch.long),
    )
