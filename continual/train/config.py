"""The hyperparameters of one training run, validated on construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from continual.objectives.base import TextLimits
from continual.probe import HEAD_INITS
from tasks.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run. `patience` counts validations without improvement
    before stopping (0 = never stop early).

    Defaults, and why:
    - `head_init="probe"`: an encoder's head starts as a logistic-regression probe of the
      starting features (`continual.probe`). With a random head the first gradients into the
      prefix are noise that AdamW turns into full-size steps; on tasks the frozen features
      separate weakly the prefix then washes the input out and the run stalls at the label
      prior (vader_nyt, 400 steps: 53.4% with a random head, 78.4% with the probe).
    - `min_best_share=0.5`: the kept ("best") prefix comes from a validation in the second
      half of the steps, and patience only counts from there. A validation split of a few
      hundred examples is noisy enough that an early lucky score (the step-50 best of an
      undertrained prefix) used to win; ties go to the later step.
    """

    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 50
    patience: int = 4
    val_fraction: float = 0.1
    val_max: int = 300
    eval_batch_size: int = 32
    max_length: int = 128
    max_target_length: int = 32
    head_init: str = "probe"
    min_best_share: float = 0.5

    def __post_init__(self) -> None:
        checks = {  # name: (holds, what the value must be)
            "steps": (self.steps >= 1, "a whole number of at least 1"),
            "batch_size": (self.batch_size >= 1, "a whole number of at least 1"),
            "lr": (math.isfinite(self.lr) and self.lr > 0, "a finite number above 0, e.g. 1e-3"),
            "warmup_ratio": (0 <= self.warmup_ratio < 1, "at least 0 and below 1"),
            "eval_every": (self.eval_every >= 1, "a whole number of at least 1"),
            "patience": (self.patience >= 0, "0 (no early stopping) or more"),
            "val_fraction": (0 < self.val_fraction < 1, "above 0 and below 1"),
            "max_length": (self.max_length >= 8, "at least 8 tokens"),
            "max_target_length": (self.max_target_length >= 1, "at least 1 token"),
            "min_best_share": (0 <= self.min_best_share <= 1, "between 0 and 1"),
        }
        for name, (ok, must) in checks.items():
            if not ok:
                raise ConfigError(
                    f"training option {name}={getattr(self, name)!r} is out of range: it must be "
                    f"{must}"
                )
        if self.head_init not in HEAD_INITS:
            raise ConfigError(
                f"training option head_init={self.head_init!r} is not one of {HEAD_INITS}"
            )

    @property
    def limits(self) -> TextLimits:
        return TextLimits(max_length=self.max_length, max_target_length=self.max_target_length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)
