"""Decoder × classification: the prompt followed by the label words, trained on the target
tokens; predicts by ranking each label's words after the prompt (rank classification)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from continual.backbones import Backbone
from continual.modules.base import RowModules
from continual.objectives.base import TextLimits, register_objective
from continual.objectives.decoder import decoder_loss, label_scores, rank_classify
from tasks.spec import TaskSpec


class DecoderClassification:
    backbone_kind = "decoder"
    task_kind = "classification"
    peft_task_type = "CAUSAL_LM"

    def new_head(self, backbone: Backbone, spec: TaskSpec, *, seed: int) -> None:
        return None

    def fit_head(self, *args: Any, **kwargs: Any) -> None:
        return None  # no head to fit

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
        return decoder_loss(backbone, spec, texts, targets, rows, limits)

    def predict(
        self,
        backbone: Backbone,
        specs: Sequence[TaskSpec],
        heads: Sequence[nn.Module | None],
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[str]:
        return rank_classify(backbone, specs, texts, rows, limits)

    def label_probs(
        self,
        backbone: Backbone,
        specs: Sequence[TaskSpec],
        heads: Sequence[nn.Module | None],
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[torch.Tensor]:
        """Row i's probabilities over `specs[i].labels`: the softmax of the labels' summed
        log-likelihoods, whose argmax is what `predict` answers."""
        return [s.float().softmax(-1) for s in label_scores(backbone, specs, texts, rows, limits)]

    def predict_task(
        self,
        backbone: Backbone,
        spec: TaskSpec,
        head: nn.Module | None,
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[str]:
        return rank_classify(backbone, [spec] * len(texts), texts, rows, limits)


register_objective(DecoderClassification())
