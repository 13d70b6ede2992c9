"""Per-row soft prompts of one batch (a `RowModules` whose virtual positions are inputs).

A prompt's P tokens are input embeddings, placed before the row's own tokens: every layer of
the backbone computes them, so (unlike a prefix's keys and values) they see the row's tokens on
an encoder. `embeds()` hands them to `continual.model.forward`, which puts them in front of the
token embeddings and drops their outputs again; `mask` and `offset` describe them as they do a
prefix's positions (a shorter prompt is zero-padded and masked; the row's tokens start at
position P, as PEFT runs a prompt), so the cache a decoder returns (prompt then tokens) is laid
out as a prefix's. A packed pass cannot take input embeddings: the objectives use the padded
path for these rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from torch import nn

from continual.modules.base import PackedModules, padded_bank
from continual.modules.prompt.config import PromptConfig
from tasks.errors import ConfigError


@dataclass
class RowPrompt:
    """rows `[B, P_max, hidden]`; mask `[B, P_max]`; offset `[B]` (each row's prompt length);
    task `[B]`: each row's prompt, shared by the rows of one task."""

    rows: torch.Tensor
    mask: torch.Tensor
    offset: torch.Tensor
    task: torch.Tensor

    def select(self, index: torch.Tensor) -> RowPrompt:
        return replace(
            self,
            rows=self.rows[index],
            mask=self.mask[index],
            offset=self.offset[index],
            task=self.task[index],
        )

    def groups(self) -> torch.Tensor:
        return self.task

    def embeds(self) -> torch.Tensor:
        return self.rows

    def past(self) -> None:
        return None

    def packed(self, segment: torch.Tensor, row: torch.Tensor) -> PackedModules:
        raise ConfigError(
            "a soft prompt adds input tokens, which a packed pass cannot hold; run it padded"
        )

    def hooks(
        self, model: nn.Module, token_row: torch.Tensor
    ) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def stack_rows(
    prompts: list[tuple[torch.Tensor, PromptConfig]], row_task: torch.Tensor
) -> RowPrompt:
    """Per-row prompts for rows that may belong to different tasks: one (`[P_t, hidden]`,
    config) per task, `row_task` `[B]` each row's index into `prompts`."""
    widths = {c.hidden_size for _, c in prompts}
    if len(widths) != 1:
        raise ConfigError("prompts of one batch must be for the same backbone width")
    bank, mask = padded_bank([t for t, _ in prompts])
    offset = torch.tensor([t.shape[0] for t, _ in prompts], dtype=torch.long)
    return RowPrompt(bank[row_task], mask[row_task], offset[row_task], row_task)


def single(prompt: torch.Tensor, batch_size: int) -> RowPrompt:
    """The same prompt on every row (an `expand`: gradients sum over the batch)."""
    p = int(prompt.shape[0])
    return RowPrompt(
        rows=prompt.unsqueeze(0).expand(batch_size, -1, -1),
        mask=torch.ones(batch_size, p, dtype=torch.long),
        offset=torch.full((batch_size,), p, dtype=torch.long),
        task=torch.zeros(batch_size, dtype=torch.long),
    )
