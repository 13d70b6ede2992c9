"""Encoder × classification: mean-pooled hidden states -> a per-task head -> label logits,
trained with cross-entropy. The head starts as a linear probe of the starting features
(`continual.probe`) when the training config asks for it."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from continual.backbones import Backbone
from continual.heads import ClassificationHead
from continual.modules.base import RowModules
from continual.objectives.base import TextLimits, register_objective
from continual.objectives.encoder import encoder_features, features
from continual.probe import PROBE_MAX, fit_head
from tasks.errors import ConfigError
from tasks.spec import Example, TaskSpec


def encoder_loss(
    backbone: Backbone,
    head: ClassificationHead,
    spec: TaskSpec,
    texts: Sequence[str],
    targets: Sequence[str],
    modules: RowModules | None,
    limits: TextLimits,
) -> torch.Tensor:
    """Cross-entropy of the head's label logits on the pooled features of one batch."""
    index = {label: i for i, label in enumerate(spec.labels)}
    logits = head(encoder_features(backbone, texts, modules, limits))
    y = torch.tensor([index[t] for t in targets], device=logits.device)
    return F.cross_entropy(logits, y)


def _need(head: nn.Module | None, spec: TaskSpec) -> nn.Module:
    if head is None:
        raise ConfigError(f"task {spec.name} has no head for an encoder backbone")
    return head


class EncoderClassification:
    backbone_kind = "encoder"
    task_kind = "classification"
    peft_task_type = "SEQ_CLS"

    def new_head(self, backbone: Backbone, spec: TaskSpec, *, seed: int) -> ClassificationHead:
        """A fresh head, on the backbone's device (float32: heads run on float32 features)."""
        head = ClassificationHead(backbone.geometry.hidden_size, len(spec.labels), seed=seed)
        return head.to(backbone.device)

    def fit_head(
        self,
        backbone: Backbone,
        head: ClassificationHead,
        spec: TaskSpec,
        examples: Sequence[Example],
        rows_of: Callable[[int], RowModules | None],
        limits: TextLimits,
        *,
        seed: int,
        batch_size: int,
    ) -> None:
        """Fit `head` on a seeded sample of at most `PROBE_MAX` examples, on the features under
        the module training starts from (`rows_of`)."""
        sample = random.Random(seed).sample(list(examples), min(len(examples), PROBE_MAX))
        feats = features(backbone, [e.text for e in sample], rows_of, limits, batch_size=batch_size)
        fit_head(head, spec, feats, sample, seed=seed)

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
        return encoder_loss(backbone, _need(head, spec), spec, texts, targets, rows, limits)

    def predict(
        self,
        backbone: Backbone,
        specs: Sequence[TaskSpec],
        heads: Sequence[nn.Module | None],
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[str]:
        """Each row's own head on its pooled features (one row at a time)."""
        logits = _row_logits(backbone, specs, heads, texts, rows, limits)
        return [spec.labels[int(z.argmax(-1))] for spec, z in zip(specs, logits)]

    def label_probs(
        self,
        backbone: Backbone,
        specs: Sequence[TaskSpec],
        heads: Sequence[nn.Module | None],
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[torch.Tensor]:
        """Row i's probabilities over `specs[i].labels` (its head's softmax); their argmax is
        what `predict` answers."""
        logits = _row_logits(backbone, specs, heads, texts, rows, limits)
        return [z.float().softmax(-1) for z in logits]

    def predict_task(
        self,
        backbone: Backbone,
        spec: TaskSpec,
        head: nn.Module | None,
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[str]:
        """The task's head on the whole batch's pooled features at once."""
        logits = _need(head, spec)(encoder_features(backbone, texts, rows, limits))
        return [spec.labels[int(i)] for i in logits.argmax(-1)]


def _row_logits(
    backbone: Backbone,
    specs: Sequence[TaskSpec],
    heads: Sequence[nn.Module | None],
    texts: Sequence[str],
    rows: RowModules | None,
    limits: TextLimits,
) -> list[torch.Tensor]:
    """Row i's label logits: its own head on its pooled features (one row at a time)."""
    feats = encoder_features(backbone, texts, rows, limits)
    return [_need(head, spec)(f.unsqueeze(0))[0] for spec, head, f in zip(specs, heads, feats)]


register_objective(EncoderClassification())
