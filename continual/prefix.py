"""The prefix: per-layer key/value vectors prepended to every attention layer (Li & Liang 2021).

Layout. A prefix of length P is stored flat as `[P, layers * 2 * kv_heads * head_dim]`, the
same layout as PEFT's `prompt_embeddings`: viewed as `[P, layers, 2 (key, value), kv_heads,
head_dim]`. Grouped-query attention is handled by using key/value heads, not query heads.

Training uses the paper's reparameterization: a `[P, hidden]` embedding goes through an MLP
(hidden -> 512 -> tanh -> layers*2*kv_dim). A prefix initialised from given tensors starts exactly
at them: the trainable module is `base + MLP(embedding)` with `base` the given tensor (a frozen
buffer) and the MLP's last layer starting at zero, so the MLP learns the change from `base`.
`eject()` collapses all of it into the flat tensor used at inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from tasks.errors import ConfigError

Positions = Literal["explicit", "shifted"]


@dataclass(frozen=True)
class PrefixConfig:
    """Shapes and conventions of a prefix; stored with every prefix.

    `positions`: "explicit" gives the input tokens positions 0..T-1 as if there were no prefix;
    "shifted" gives them P..P+T-1 (what transformers does by default with a cache, and PEFT).
    """

    length: int
    layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    reparam_hidden: int = 512
    positions: Positions = "explicit"
    init: str = "random"

    def __post_init__(self) -> None:
        for name in ("length", "layers", "kv_heads", "head_dim", "hidden_size", "reparam_hidden"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(
                    f"prefix {name} must be a positive integer, got {getattr(self, name)}"
                )
        if self.positions not in ("explicit", "shifted"):
            raise ConfigError(
                f"prefix positions must be 'explicit' or 'shifted', got {self.positions!r}"
            )

    @property
    def flat_dim(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim

    @property
    def n_params(self) -> int:
        """Parameters stored at inference (the ejected prefix)."""
        return self.length * self.flat_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrefixConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> PrefixConfig:
        return replace(self, **changes)


class TrainablePrefix(nn.Module):
    """`base + MLP(embedding)`, shape `[P, flat_dim]`.

    With no `base` this is the paper's reparameterization with a random start. With `base`, the
    MLP's output layer starts at zero so `forward()` returns `base` exactly before training.
    """

    def __init__(self, config: PrefixConfig, *, base: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        self.embedding = nn.Parameter(torch.randn(config.length, config.hidden_size, generator=gen))
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.reparam_hidden),
            nn.Tanh(),
            nn.Linear(config.reparam_hidden, config.flat_dim),
        )
        with torch.no_grad():
            for layer in (self.mlp[0], self.mlp[2]):
                bound = 1.0 / layer.in_features**0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
        if base is None:
            base = torch.zeros(config.length, config.flat_dim)
        else:
            base = check_flat(base, config).detach().clone().float()
            with torch.no_grad():
                self.mlp[2].weight.zero_()
                self.mlp[2].bias.zero_()
        self.register_buffer("base", base)

    def forward(self) -> torch.Tensor:
        return self.base + self.mlp(self.embedding)

    @torch.no_grad()
    def eject(self) -> torch.Tensor:
        """The flat prefix `[P, flat_dim]`, detached: all that inference needs."""
        return self.forward().detach().clone().contiguous()

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def check_flat(tensor: torch.Tensor, config: PrefixConfig) -> torch.Tensor:
    """Refuse a flat prefix whose shape does not match `config`."""
    want = (config.length, config.flat_dim)
    if tuple(tensor.shape) != want:
        raise ConfigError(
            f"prefix tensor has shape {tuple(tensor.shape)} but the config needs {want} "
            f"(P={config.length}, layers={config.layers}, kv_heads={config.kv_heads}, "
            f"head_dim={config.head_dim}); was it trained on another backbone?"
        )
    return tensor


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

    def past(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (key, value), each `[B, kv_heads, P, head_dim]`: views, no copy.

        `unbind` rather than indexing: the backward of 2·layers index ops would build a
        zero-filled gradient of the whole prefix for each of them and add them up (measured:
        the largest single cost of a minilm training step); `unbind`'s backward is one stack.
        """
        b, p, _ = self.rows.shape
        view = self.rows.view(b, p, self.layers, 2, self.kv_heads, self.head_dim)
        view = view.permute(2, 3, 0, 4, 1, 5)  # [layers, 2, B, kv_heads, P, head_dim]
        return [(k, v) for k, v in (layer.unbind(0) for layer in view.unbind(0))]


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
    p_max = max(t.shape[0] for t, _ in prefixes)
    bank = torch.stack(
        [
            t if t.shape[0] == p_max else nn.functional.pad(t, (0, 0, 0, p_max - t.shape[0]))
            for t, _ in prefixes
        ]
    )
    mask = torch.stack([(torch.arange(p_max) < t.shape[0]).long() for t, _ in prefixes])
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
