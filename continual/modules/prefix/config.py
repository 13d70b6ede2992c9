"""The prefix's config: shapes and conventions, stored with every prefix (Li & Liang 2021).

Layout. A prefix of length P is stored flat as `[P, layers * 2 * kv_heads * head_dim]` under the
name "prefix", the same layout as PEFT's `prompt_embeddings`: viewed as `[P, layers, 2 (key,
value), kv_heads, head_dim]`. Grouped-query attention is handled by using key/value heads, not
query heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

import torch

from tasks.errors import ConfigError

Positions = Literal["explicit", "shifted"]
KIND = "prefix"
NAME = "prefix"  # the one named tensor a prefix ejects


@dataclass(frozen=True)
class PrefixConfig:
    """Shapes and conventions of a prefix; stored with every prefix.

    `positions`: "explicit" gives the input tokens positions 0..T-1 as if there were no prefix;
    "shifted" gives them P..P+T-1 (what transformers does by default with a cache, and PEFT).
    """

    kind: ClassVar[str] = KIND

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

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {NAME: (self.length, self.flat_dim)}

    def check(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`{"prefix": flat}` if the flat prefix fits this config (see `check_flat`)."""
        if set(tensors) != {NAME}:
            raise ConfigError(
                f"a prefix is one tensor named {NAME!r}, got tensors named {sorted(tensors)}"
            )
        return {NAME: check_flat(tensors[NAME], self)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrefixConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> PrefixConfig:
        return replace(self, **changes)


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
