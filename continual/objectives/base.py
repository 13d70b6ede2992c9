"""Objectives: what a task module is trained for and how it predicts, one per (backbone kind,
task kind), registered.

An `Objective` is looked up with `objective_for(backbone, spec)`; a pair nobody registered is a
ConfigError naming the backbone kinds that do handle the task's kind. The core (training loop,
inference, fine-tuning baseline) asks the objective and never branches on a kind itself.

Every function takes per-row modules (`continual.modules.RowModules`, or None for the plain
backbone), so a batch may mix tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from continual.backbones import Backbone, catalog
from continual.modules.base import RowModules
from tasks.errors import ConfigError
from tasks.spec import Example, TaskSpec


@dataclass(frozen=True)
class TextLimits:
    """Token budgets: inputs are cut to `max_length` tokens, targets to `max_target_length`."""

    max_length: int = 128
    max_target_length: int = 32


class Objective(Protocol):
    """Training loss and prediction for one (backbone kind, task kind).

    `peft_task_type` is what PEFT calls the setting (stored with a module for export).
    Classification objectives also offer `label_probs`, with `predict`'s arguments: each row's
    probabilities over its labels, whose argmax `predict` answers (`inference.predict_probs`
    uses it where an objective has it; generation objectives do not).
    """

    backbone_kind: str
    task_kind: str
    peft_task_type: str

    def new_head(self, backbone: Backbone, spec: TaskSpec, *, seed: int) -> nn.Module | None:
        """The task head a new task starts with (seeded), or None if the objective has none."""
        ...

    def fit_head(
        self,
        backbone: Backbone,
        head: nn.Module,
        spec: TaskSpec,
        examples: Sequence[Example],
        rows_of: Callable[[int], RowModules | None],
        limits: TextLimits,
        *,
        seed: int,
        batch_size: int,
    ) -> None:
        """Fit `head` in place before training, on features under the module training starts
        from (`rows_of(n)`: that module on n rows)."""
        ...

    def loss(
        self,
        backbone: Backbone,
        head: nn.Module | None,
        spec: TaskSpec,
        texts: Sequence[str],
        targets: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> torch.Tensor:
        """The scalar training loss of one batch of one task."""
        ...

    def predict(
        self,
        backbone: Backbone,
        specs: Sequence[TaskSpec],
        heads: Sequence[nn.Module | None],
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[str]:
        """Answers for rows that may mix tasks: row i is task `specs[i]` with head `heads[i]`."""
        ...

    def predict_task(
        self,
        backbone: Backbone,
        spec: TaskSpec,
        head: nn.Module | None,
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[str]:
        """Answers for a batch of one task (its head, if any, applied to the whole batch)."""
        ...


_OBJECTIVES: dict[tuple[str, str], Objective] = {}


def register_objective(objective: Objective) -> Objective:
    """Add an objective under (backbone kind, task kind); a duplicate pair is an error."""
    key = (objective.backbone_kind, objective.task_kind)
    if key in _OBJECTIVES:
        raise ConfigError(f"an objective for {key[0]} backbones × {key[1]} is registered twice")
    _OBJECTIVES[key] = objective
    return objective


def objectives() -> list[tuple[str, str]]:
    """The registered (backbone kind, task kind) pairs."""
    return sorted(_OBJECTIVES)


def objective(backbone_kind: str, task_kind: str) -> Objective:
    """The objective of (backbone kind, task kind)."""
    found = _OBJECTIVES.get((backbone_kind, task_kind))
    if found is None:
        able = sorted(b for b, t in _OBJECTIVES if t == task_kind)
        named = sorted(n for n, e in catalog().items() if e.kind in able)
        fix = f"use a {' or '.join(able)} backbone" if able else "no backbone kind does"
        article = "an" if backbone_kind[:1] in "aeiou" else "a"
        raise ConfigError(
            f"{article} {backbone_kind} backbone does no {task_kind} (no objective is registered for "
            f"the pair); {fix}" + (f", e.g. {', '.join(named)}" if named else "")
        )
    return found


def objective_for(backbone: Backbone, spec: TaskSpec) -> Objective:
    """The objective of task `spec` on `backbone`; a ConfigError naming both if none is."""
    try:
        return objective(backbone.kind, spec.kind)
    except ConfigError as e:
        raise ConfigError(f"task {spec.name} on backbone {backbone.name}: {e}") from None
