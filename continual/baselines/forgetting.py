"""The two baselines the stream always had: sequential fine-tuning and one shared prefix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from continual.backbones import Backbone
from continual.baselines.base import Learner, register_baseline
from continual.finetune import evaluate_plain, finetune, fresh_head, trainable_copy
from continual.inference import EvalResult, TrainedTask, evaluate
from continual.modules import ModuleConfig, Tensors, build
from continual.objectives import TextLimits
from continual.train import TrainConfig, train
from tasks.errors import ConfigError, IntegrityError
from tasks.spec import Example, TaskData, TaskSpec


@register_baseline
class SequentialFT(Learner):
    """Every weight of a trainable copy of the backbone, trained task after task."""

    method = "sequential-ft"
    default_options: ClassVar[dict[str, Any]] = {"lr": 5e-5}
    WEIGHTS = "model.safetensors"

    def __init__(
        self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]
    ) -> None:
        super().__init__(backbone, prefix_config, options)
        self.copy = trainable_copy(backbone)

    def starting_points(self, data: TaskData, config: TrainConfig) -> tuple[EvalResult, EvalResult]:
        head = fresh_head(self.backbone, data.spec, config.seed)
        kw = {"batch_size": config.eval_batch_size, "limits": config.limits}
        pretrained = evaluate_plain(self.backbone, head, data.spec, data.eval, **kw)
        if not self.tasks:  # the copy is still the pretrained backbone
            return pretrained, pretrained
        return evaluate_plain(self.copy, head, data.spec, data.eval, **kw), pretrained

    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        config = self.train_config(config)
        head = fresh_head(self.backbone, data.spec, config.seed)
        result = finetune(self.copy, head, data, config, progress=progress)
        if head is not None:
            self.heads[data.spec.name] = head.eval()
        self.tasks.append(data.spec.name)
        return {
            "steps": result.steps,
            "best_step": result.best_step,
            "seconds": result.seconds,
            "lr": config.lr,
        }

    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, batch_size: int, limits: TextLimits
    ) -> EvalResult:
        head = self.heads.get(spec.name)
        return evaluate_plain(self.copy, head, spec, examples, batch_size=batch_size, limits=limits)

    def save_weights(self, folder: Path) -> None:
        save_model(self.copy.model, str(folder / self.WEIGHTS))
        self._save_heads(folder)

    def load_weights(self, folder: Path) -> None:
        missing, unexpected = load_model(self.copy.model, str(folder / self.WEIGHTS))
        if missing or unexpected:
            raise IntegrityError(f"{folder / self.WEIGHTS}: weights do not fit the backbone")
        self._load_heads(folder)


@register_baseline
class SharedPrefix(Learner):
    """One prefix (its reparameterized module) trained through all tasks."""

    method = "shared-prefix"
    default_options: ClassVar[dict[str, Any]] = {"lr": None}
    WEIGHTS = "prefix.safetensors"

    def __init__(
        self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]
    ) -> None:
        super().__init__(backbone, prefix_config, options)
        self.module_state: dict[str, torch.Tensor] | None = None
        self.tensors: Tensors | None = None

    def _task(self, spec: TaskSpec, tensors: Tensors, head, limits: TextLimits) -> TrainedTask:
        return TrainedTask(
            spec=spec, config=self.prefix_config, tensors=tensors, head=head, limits=limits
        )

    def starting_points(self, data: TaskData, config: TrainConfig) -> tuple[EvalResult, EvalResult]:
        head = fresh_head(self.backbone, data.spec, config.seed)
        fresh = build(self.prefix_config, seed=config.seed).eject()
        kw = {"batch_size": config.eval_batch_size}
        random = evaluate(
            self.backbone, self._task(data.spec, fresh, head, config.limits), data.eval, **kw
        )
        if self.tensors is None:
            return random, random
        now = self._task(data.spec, self.tensors, head, config.limits)
        return evaluate(self.backbone, now, data.eval, **kw), random

    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        config = self.train_config(config)
        resume = None
        if self.module_state is not None:  # continue the same module; a fresh head and optimizer
            resume = {"module": self.module_state, "head": {}, "optimizer_slots": {}}
        result = train(
            self.backbone, data, self.prefix_config, config, resume=resume, progress=progress
        )
        self.module_state = {k: v.detach().clone() for k, v in result.state["module"].items()}
        self.tensors = result.task.tensors
        if result.task.head is not None:
            self.heads[data.spec.name] = result.task.head
        self.tasks.append(data.spec.name)
        return {
            "steps": result.steps,
            "best_step": result.best_step,
            "seconds": result.seconds,
            "lr": config.lr,
        }

    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, batch_size: int, limits: TextLimits
    ) -> EvalResult:
        if self.tensors is None:
            raise ConfigError(f"baseline {self.method} has not learnt any task yet")
        task = self._task(spec, self.tensors, self.heads.get(spec.name), limits)
        return evaluate(self.backbone, task, examples, batch_size=batch_size)

    def save_weights(self, folder: Path) -> None:
        """One file: the trainable module's state as `module.*` beside the ejected tensors
        under their own names (a prefix: `prefix`)."""
        if self.module_state is not None and self.tensors is not None:
            tensors = {
                f"module.{k}": v.to("cpu").contiguous() for k, v in self.module_state.items()
            }
            ejected = {k: v.to("cpu").contiguous() for k, v in self.tensors.items()}
            save_file({**tensors, **ejected}, str(folder / self.WEIGHTS))
        self._save_heads(folder)

    def load_weights(self, folder: Path) -> None:
        if (folder / self.WEIGHTS).exists():
            flat = load_file(str(folder / self.WEIGHTS))
            state = {k: v for k, v in flat.items() if k.startswith("module.")}
            ejected = {k: v for k, v in flat.items() if not k.startswith("module.")}
            self.tensors = self.prefix_config.check(ejected)
            self.module_state = {k.removeprefix("module."): v for k, v in state.items()}
        self._load_heads(folder)
