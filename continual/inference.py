"""Prediction and evaluation with trained task modules, one task or many in the same batch.

A `TrainedTask` is everything one task needs at inference: its spec, its module (config and
ejected named tensors), its head (objectives that have one) and its text limits. `predict`
answers a list of (task index, text) items in batches that may mix tasks: rows that share text
limits and a module kind share a pass per objective (decoders: one for the classification
rows, one greedy decode for the generation rows).

Evaluation is deterministic: a fixed batch size over the data in its given order, no sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from continual.backbones import Backbone
from continual.modules import ModuleConfig, Tensors, module_kind
from continual.objectives import Objective, TextLimits, objective_for
from continual.scoring import accuracy, bleu, mean_rouge_l, predictions_sha256
from tasks.spec import Example, TaskSpec


@dataclass
class TrainedTask:
    """A task ready for inference: spec, module config and its named tensors (a prefix:
    `{"prefix": [P, flat_dim]}`), head (or None) and text limits."""

    spec: TaskSpec
    config: ModuleConfig
    tensors: Tensors
    head: nn.Module | None = None
    limits: TextLimits = field(default_factory=TextLimits)


@dataclass(frozen=True)
class EvalResult:
    metric: str
    score: float
    n: int
    predictions: tuple[str, ...]
    predictions_sha256: str
    extra: dict[str, float]

    def summary(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "score": self.score,
            "n": self.n,
            "predictions_sha256": self.predictions_sha256,
            **self.extra,
        }


def _predict_batch(
    backbone: Backbone,
    tasks: Sequence[TrainedTask],
    idx: list[int],
    texts: list[str],
    probs: bool = False,
) -> list:
    """Rows sharing text limits (so every row is cut as it would be alone) and a module kind
    share a pass. `probs`: each row's label probabilities (see `predict_probs`) instead of its
    answer."""
    out: list = [None] * len(idx)
    groups: dict[tuple[TextLimits, str], list[int]] = {}
    for j, i in enumerate(idx):
        groups.setdefault((tasks[i].limits, tasks[i].config.kind), []).append(j)
    for (limits, kind), pick in groups.items():
        answers = _predict_rows(
            backbone, tasks, kind, [idx[j] for j in pick], [texts[j] for j in pick], limits, probs
        )
        for j, a in zip(pick, answers, strict=True):
            out[j] = a
    return out


def _predict_rows(
    backbone: Backbone,
    tasks: Sequence[TrainedTask],
    kind: str,
    idx: list[int],
    texts: list[str],
    limits: TextLimits,
    probs: bool = False,
) -> list:
    """One pass per objective over rows whose modules are all of `kind`. The rows' modules are
    laid out over every task of that kind (in `tasks` order), whether or not it has a row here,
    so a task's rows get the same layout whatever else the batch holds."""
    mine = [i for i, t in enumerate(tasks) if t.config.kind == kind]
    where = {i: n for n, i in enumerate(mine)}
    parts = [(tasks[i].tensors, tasks[i].config) for i in mine]
    rows = module_kind(kind).rows(parts, torch.tensor([where[i] for i in idx]))
    by_objective: dict[int, tuple[Objective, list[int]]] = {}
    for j, i in enumerate(idx):
        found = objective_for(backbone, tasks[i].spec)
        by_objective.setdefault(id(found), (found, []))[1].append(j)
    out: list = [None] * len(idx)
    for found, pick in by_objective.values():
        run = getattr(found, "label_probs", None) if probs else found.predict
        if run is None:
            continue  # no label probabilities for this objective (generation): None
        sub = rows if len(pick) == len(idx) else rows.select(torch.tensor(pick))
        answers = run(
            backbone,
            [tasks[idx[j]].spec for j in pick],
            [tasks[idx[j]].head for j in pick],
            [texts[j] for j in pick],
            sub,
            limits,
        )
        for j, a in zip(pick, answers, strict=True):
            out[j] = a
    return out


@torch.no_grad()
def predict(
    backbone: Backbone,
    tasks: Sequence[TrainedTask],
    items: Sequence[tuple[int, str]],
    *,
    batch_size: int = 32,
    progress=None,
) -> list[str]:
    """Answers for (task index, text) items, in order, `batch_size` items per pass.

    Batches follow the items' order; rows of different tasks share a pass. `progress`, if
    given, is called with the number of items done after each batch.
    """
    return _batched(backbone, tasks, items, batch_size, progress, probs=False)


@torch.no_grad()
def predict_probs(
    backbone: Backbone,
    tasks: Sequence[TrainedTask],
    items: Sequence[tuple[int, str]],
    *,
    batch_size: int = 32,
) -> list[dict[str, float] | None]:
    """For (task index, text) items, each classification row's probability of each of its
    task's labels (a dict over `spec.labels`; the label `predict` answers is the most likely),
    None for rows whose task has no labels (generation). Batched as `predict` is."""
    out = _batched(backbone, tasks, items, batch_size, None, probs=True)
    return [
        None if p is None else dict(zip(tasks[i].spec.labels, p.tolist(), strict=True))
        for (i, _), p in zip(items, out, strict=True)
    ]


def _batched(backbone, tasks, items, batch_size, progress, *, probs: bool) -> list:
    was_training = backbone.model.training
    backbone.model.eval()
    for t in tasks:
        if t.head is not None:
            t.head.to(backbone.device).eval()  # stored heads load on the CPU
    out: list = []
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            idx, texts = [i for i, _ in chunk], [x for _, x in chunk]
            out += _predict_batch(backbone, tasks, idx, texts, probs)
            if progress is not None:
                progress(len(chunk))
    finally:
        backbone.model.train(was_training)
    return out


def score(spec: TaskSpec, predictions: Sequence[str], examples: Sequence[Example]) -> EvalResult:
    refs = [e.target for e in examples]
    if spec.kind == "classification":
        value, extra = accuracy(predictions, refs), {}
    else:
        value, extra = mean_rouge_l(predictions, refs), {"bleu": bleu(predictions, refs)}
    return EvalResult(
        metric=spec.metric,
        score=value,
        n=len(refs),
        predictions=tuple(predictions),
        predictions_sha256=predictions_sha256(predictions),
        extra=extra,
    )


def evaluate(
    backbone: Backbone,
    task: TrainedTask,
    examples: Sequence[Example],
    *,
    batch_size: int = 32,
    progress=None,
) -> EvalResult:
    """Score one task's module on `examples` (accuracy or ROUGE-L F1, plus BLEU for
    generation)."""
    preds = predict(
        backbone, [task], [(0, e.text) for e in examples], batch_size=batch_size, progress=progress
    )
    return score(task.spec, preds, examples)
