"""What training an arriving task gives (steps 2-3 of an arrival, searched or not)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from continual.inference import EvalResult
from continual.modules import ModuleConfig
from continual.train import TrainConfig, TrainResult


@dataclass
class Trained:
    """Steps 2-3's outcome: the trained task, its score and what the run records."""

    result: TrainResult
    evaluation: EvalResult
    pconfig: ModuleConfig
    lineage: list[tuple[int, float, str]]
    run_extra: dict[str, Any]
    embeddings: dict[str, Any] | None
    starts: tuple[EvalResult, EvalResult] | None = None
    config: TrainConfig | None = None  # what trained it, when a search chose its options
