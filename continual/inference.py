"""Prediction and evaluation with trained prefixes, one task or many in the same batch.

A `TaskPrefix` is everything one task needs at inference: its spec, its ejected prefix and
config, and its head (encoders). `predict` answers a list of (task index, text) items in batches
that may mix tasks: one backbone pass per batch (decoders: one for the classification rows, one
greedy decode for the generation rows).

Evaluation is deterministic: a fixed batch size over the data in its given order, no sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from continual.backbones import Backbone
from continual.heads import ClassificationHead
from continual.objectives import TextLimits, encoder_features, generate, rank_classify
from continual.prefix import PrefixConfig, RowPrefix, stack_rows
from continual.scoring import accuracy, bleu, mean_rouge_l, predictions_sha256
from tasks.errors import ConfigError
from tasks.spec import Example, TaskSpec


@dataclass
class TaskPrefix:
    """A task ready for inference: spec, flat prefix `[P, flat_dim]`, its config and head."""

    spec: TaskSpec
    config: PrefixConfig
    prefix: torch.Tensor
    head: ClassificationHead | None = None
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
    backbone: Backbone, tasks: Sequence[TaskPrefix], idx: list[int], texts: list[str]
) -> list[str]:
    """Rows sharing text limits share a pass, so every row is cut as it would be alone."""
    out: list[str] = [""] * len(idx)
    groups: dict[TextLimits, list[int]] = {}
    for j, i in enumerate(idx):
        groups.setdefault(tasks[i].limits, []).append(j)
    for limits, pick in groups.items():
        answers = _predict_rows(
            backbone, tasks, [idx[j] for j in pick], [texts[j] for j in pick], limits
        )
        for j, a in zip(pick, answers, strict=True):
            out[j] = a
    return out


def _predict_rows(
    backbone: Backbone,
    tasks: Sequence[TaskPrefix],
    idx: list[int],
    texts: list[str],
    limits: TextLimits,
) -> list[str]:
    rows = stack_rows([(t.prefix, t.config) for t in tasks], torch.tensor(idx))
    specs = [tasks[i].spec for i in idx]
    if backbone.kind == "encoder":
        feats = encoder_features(backbone, texts, rows, limits)
        out = []
        for i, f in zip(idx, feats):
            head = tasks[i].head
            if head is None:
                raise ConfigError(f"task {tasks[i].spec.name} has no head for an encoder backbone")
            out.append(tasks[i].spec.labels[int(head(f.unsqueeze(0)).argmax(-1))])
        return out
    out: list[str] = [""] * len(idx)
    for kind, fn in (("classification", rank_classify), ("generation", generate)):
        pick = [j for j, s in enumerate(specs) if s.kind == kind]
        if pick:
            sub: RowPrefix = rows.select(torch.tensor(pick))
            answers = fn(backbone, [specs[j] for j in pick], [texts[j] for j in pick], sub, limits)
            for j, a in zip(pick, answers):
                out[j] = a
    return out


@torch.no_grad()
def predict(
    backbone: Backbone,
    tasks: Sequence[TaskPrefix],
    items: Sequence[tuple[int, str]],
    *,
    batch_size: int = 32,
    progress=None,
) -> list[str]:
    """Answers for (task index, text) items, in order, `batch_size` items per pass.

    Batches follow the items' order; rows of different tasks share a pass. `progress`, if
    given, is called with the number of items done after each batch.
    """
    was_training = backbone.model.training
    backbone.model.eval()
    for t in tasks:
        if t.head is not None:
            t.head.eval()
    out: list[str] = []
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            out += _predict_batch(backbone, tasks, [i for i, _ in chunk], [x for _, x in chunk])
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
    task: TaskPrefix,
    examples: Sequence[Example],
    *,
    batch_size: int = 32,
    progress=None,
) -> EvalResult:
    """Score one task's prefix on `examples` (accuracy or ROUGE-L F1, plus BLEU for generation)."""
    preds = predict(
        backbone, [task], [(0, e.text) for e in examples], batch_size=batch_size, progress=progress
    )
    return score(task.spec, preds, examples)
