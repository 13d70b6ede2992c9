"""Decoder × generation: the prompt followed by the target text, trained on the target tokens;
predicts by greedy decoding up to `max_target_length` tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from continual.backbones import Backbone
from continual.modules.base import RowModules
from continual.objectives.base import TextLimits, register_objective
from continual.objectives.decoder import decoder_loss, generate
from tasks.spec import TaskSpec


class DecoderGeneration:
    backbone_kind = "decoder"
    task_kind = "generation"
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
        return generate(backbone, specs, texts, rows, limits)

    def predict_task(
        self,
        backbone: Backbone,
        spec: TaskSpec,
        head: nn.Module | None,
        texts: Sequence[str],
        rows: RowModules | None,
        limits: TextLimits,
    ) -> list[str]:
        return generate(backbone, [spec] * len(texts), texts, rows, limits)


register_objective(DecoderGeneration())
