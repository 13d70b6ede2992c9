"""LoRA's config (Hu et al. 2021): which linear layers of the frozen backbone get a low-rank
update `W x + (alpha / rank) * B A x`, and their shapes; stored with every LoRA module.

Layout. Target i (in `targets` order, full module names such as
`encoder.layer.0.attention.self.query`) ejects two tensors: `lora.{i}.A` `[rank, in]` and
`lora.{i}.B` `[out, rank]`, PEFT's `lora_A.weight` / `lora_B.weight` of that layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch

from continual.modules.base import check_shapes
from tasks.errors import ConfigError

KIND = "lora"
#: rank 8, alpha 16, the query and value projections: the LoRA paper's choice for attention
#: (W_q and W_v at a small rank did as well as more matrices at a larger one) and PEFT's
#: default targets for BERT- and Llama-style models.
RANK, ALPHA = 8, 16.0


def names(i: int) -> tuple[str, str]:
    return f"lora.{i}.A", f"lora.{i}.B"


@dataclass(frozen=True)
class LoraConfig:
    """Rank, scale and targets of a LoRA module (`dims`: each target's (in, out) features)."""

    kind: ClassVar[str] = KIND

    targets: tuple[str, ...]
    dims: tuple[tuple[int, int], ...]
    rank: int = RANK
    alpha: float = ALPHA
    init: str = "random"

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "dims", tuple(tuple(int(x) for x in d) for d in self.dims))
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"lora rank must be a whole number of at least 1, got {self.rank!r}")
        if not isinstance(self.alpha, int | float) or isinstance(self.alpha, bool):
            raise ConfigError(f"lora alpha must be a number, got {self.alpha!r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora alpha must be positive, got {self.alpha!r}")
        if not self.targets:
            raise ConfigError("lora targets is empty; name at least one linear layer")
        if len(self.dims) != len(self.targets):
            raise ConfigError(
                f"lora config has {len(self.targets)} targets but {len(self.dims)} shapes"
            )

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    @property
    def n_params(self) -> int:
        return sum(self.rank * (i + o) for i, o in self.dims)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(self.dims):
            a, b = names(i)
            out[a], out[b] = (self.rank, fan_in), (fan_out, self.rank)
        return out

    def check(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return check_shapes(tensors, self.shapes(), "lora")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"], d["dims"] = list(self.targets), [list(x) for x in self.dims]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoraConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> LoraConfig:
        return replace(self, **changes)
