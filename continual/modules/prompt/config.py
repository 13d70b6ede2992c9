"""Prompt tuning's config (Lester et al. 2021): P soft tokens, each an input embedding of the
backbone's width, placed before every input of the task; stored with every prompt.

Layout. One tensor named "prompt" `[P, hidden_size]`, PEFT's `prompt_embeddings` of a
prompt-tuning adapter (one transformer submodule). `init_std` is the spread of the backbone's
own token embeddings, recorded so a random start has their scale (PEFT's random start draws
from N(0, 1), about 20 times the scale of minilm's or smollm2's embeddings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch

from continual.modules.base import check_shapes
from tasks.errors import ConfigError

KIND = "prompt"
NAME = "prompt"  # the one named tensor a prompt ejects
#: Soft tokens per task when none is given: the shortest length Lester et al. found close to
#: their best on every model size (their Figure 3: 20 and 100 tokens, then little gain).
LENGTH = 20


@dataclass(frozen=True)
class PromptConfig:
    """Length and width of a soft prompt, and the scale of its random start."""

    kind: ClassVar[str] = KIND

    length: int
    hidden_size: int
    init_std: float = 0.02
    init: str = "random"

    def __post_init__(self) -> None:
        for name in ("length", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"prompt {name} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.init_std, int | float) or not self.init_std > 0:
            raise ConfigError(f"prompt init_std must be a positive number, got {self.init_std!r}")

    @property
    def n_params(self) -> int:
        return self.length * self.hidden_size

    @property
    def input_positions(self) -> int:
        """Positions the prompt takes before every input (the backbone's context bounds it
        and the input together)."""
        return self.length

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {NAME: (self.length, self.hidden_size)}

    def check(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return check_shapes(tensors, self.shapes(), KIND)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PromptConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> PromptConfig:
        return replace(self, **changes)
