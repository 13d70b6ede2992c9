"""The two upper bounds papers put beside continual learners (issue 18):

- `per-task-ft`: a fully fine-tuned copy of the backbone per task, trained on that task alone
  and answering only it: isolation at the price of a whole model per task (its stored bytes
  are the report's to show).
- `multitask`: after each arrival, one fresh copy trained on every task seen so far at once:
  each step a batch drawn from the union of their training examples, each example's loss under
  its own task's objective and head; `steps_per_task` (default true) gives it the arrival's
  steps times the number of tasks, so each task gets the steps it got alone. No early
  stopping (one validation split cannot speak for every task): the final weights answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_model, save_model

from continual.backbones import Backbone
from continual.baselines.base import Learner, hard_link, register_baseline, saved_tasks
from continual.finetune import evaluate_plain, finetune, fresh_head, trainable_copy
from continual.inference import EvalResult
from continual.modules import ModuleConfig
from continual.objectives import TextLimits, objective_for
from continual.train import TrainConfig, adamw, lr_factor, optimize, split_validation
from tasks.errors import ConfigError, IntegrityError
from tasks.spec import Example, TaskData, TaskSpec


@register_baseline
class PerTaskFT(Learner):
    method = "per-task-ft"
    default_options: ClassVar[dict[str, Any]] = {"lr": 5e-5}

    def __init__(self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]):
        super().__init__(backbone, prefix_config, options)
        self.copies: dict[str, Backbone] = {}

    def starting_points(self, data: TaskData, config: TrainConfig) -> tuple[EvalResult, EvalResult]:
        head = fresh_head(self.backbone, data.spec, config.seed)
        kw = {"batch_size": config.eval_batch_size, "limits": config.limits}
        pretrained = evaluate_plain(self.backbone, head, data.spec, data.eval, **kw)
        return pretrained, pretrained  # every task starts from the pretrained backbone

    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        config = self.train_config(config)
        copy = trainable_copy(self.backbone)
        head = fresh_head(self.backbone, data.spec, config.seed)
        result = finetune(copy, head, data, config, progress=progress)
        copy.model.requires_grad_(False)
        self.copies[data.spec.name] = copy
        if head is not None:
            self.heads[data.spec.name] = head.eval()
        self.tasks.append(data.spec.name)
        return {"steps": result.steps, "best_step": result.best_step,
                "seconds": result.seconds, "lr": config.lr}  # fmt: skip

    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, batch_size: int, limits: TextLimits
    ) -> EvalResult:
        copy = self.copies.get(spec.name)
        if copy is None:
            raise ConfigError(f"baseline {self.method} has not learnt task {spec.name}")
        head = self.heads.get(spec.name)
        return evaluate_plain(copy, head, spec, examples, batch_size=batch_size, limits=limits)

    def stored_bytes(self) -> int:
        return sum(
            sum(p.numel() * p.element_size() for p in c.model.parameters())
            for c in self.copies.values()
        )

    def save_weights(self, folder: Path) -> None:
        # A task's copy never changes once learnt: the copies the previous state already holds
        # are hard-linked from it, so each arrival writes one model, not one per task so far.
        before = saved_tasks(self.saved_as)
        for i, task in enumerate(self.tasks):
            name = f"model-{i:04d}.safetensors"
            kept = i < len(before) and before[i] == task and self.saved_as is not None
            if not (kept and hard_link(self.saved_as / name, folder / name)):
                save_model(self.copies[task].model, str(folder / name))
        self._save_heads(folder)

    def load_weights(self, folder: Path) -> None:
        for i, task in enumerate(self.tasks):
            copy = trainable_copy(self.backbone)
            missing, unexpected = load_model(copy.model, str(folder / f"model-{i:04d}.safetensors"))
            if missing or unexpected:
                raise IntegrityError(f"{folder}: task {task}'s weights do not fit the backbone")
            copy.model.requires_grad_(False)
            self.copies[task] = copy
        self._load_heads(folder)


@register_baseline
class Multitask(Learner):
    method = "multitask"
    default_options: ClassVar[dict[str, Any]] = {"lr": 5e-5, "steps_per_task": True}
    DATA, WEIGHTS = "data.json", "model.safetensors"

    def __init__(self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]):
        super().__init__(backbone, prefix_config, options)
        self.copy: Backbone | None = None
        self.data: dict[str, tuple[TaskSpec, list[Example]]] = {}

    def starting_points(self, data: TaskData, config: TrainConfig) -> tuple[EvalResult, EvalResult]:
        head = fresh_head(self.backbone, data.spec, config.seed)
        kw = {"batch_size": config.eval_batch_size, "limits": config.limits}
        pretrained = evaluate_plain(self.backbone, head, data.spec, data.eval, **kw)
        if self.copy is None:
            return pretrained, pretrained
        return evaluate_plain(self.copy, head, data.spec, data.eval, **kw), pretrained

    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        config = self.train_config(config)
        train, _ = split_validation(data, config)
        self.data[data.spec.name] = (data.spec, list(train))
        self.tasks.append(data.spec.name)
        steps = config.steps * (len(self.tasks) if self.options["steps_per_task"] else 1)
        config = config.with_(steps=steps, eval_every=steps + 1, patience=0)
        copy = trainable_copy(self.backbone)
        heads = {
            t: fresh_head(self.backbone, spec, config.seed) for t, (spec, _) in self.data.items()
        }
        pool = [(t, e) for t, (_, rows) in self.data.items() for e in rows]

        def loss_of(chunk: Sequence[tuple[str, Example]]) -> torch.Tensor:
            total = 0.0
            for task in sorted({t for t, _ in chunk}):
                spec = self.data[task][0]
                rows = [e for t, e in chunk if t == task]
                loss = objective_for(copy, spec).loss(
                    copy, heads[task], spec, [e.text for e in rows], [e.target for e in rows],
                    None, config.limits,
                )  # fmt: skip
                total = total + loss * len(rows)
            return total / len(chunk)

        params = list(copy.model.parameters())
        params += [p for h in heads.values() if h is not None for p in h.parameters()]
        optimizer = adamw(params, lr=config.lr, weight_decay=config.weight_decay)
        warmup = int(config.warmup_ratio * config.steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, config.steps, warmup)
        )
        torch.manual_seed(config.seed)
        try:
            loop = optimize(
                params=params, optimizer=optimizer, scheduler=scheduler, loss_of=loss_of,
                validate=lambda: 0.0, on_best=lambda step: None,
                modules=[copy.model] + [h for h in heads.values() if h is not None],
                train_set=pool, has_validation=False, config=config,
                desc=f"multitask ({len(self.tasks)} tasks)", progress=progress,
            )  # fmt: skip
        finally:
            copy.model.eval()
        optimizer.zero_grad(set_to_none=True)
        copy.model.requires_grad_(False)
        self.copy = copy
        self.heads = {t: h.eval() for t, h in heads.items() if h is not None}
        return {"steps": loop.steps, "best_step": loop.steps, "seconds": loop.seconds,
                "lr": config.lr}  # fmt: skip

    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, batch_size: int, limits: TextLimits
    ) -> EvalResult:
        if self.copy is None:
            raise ConfigError(f"baseline {self.method} has not learnt any task yet")
        head = self.heads.get(spec.name)
        return evaluate_plain(self.copy, head, spec, examples, batch_size=batch_size, limits=limits)

    def save_weights(self, folder: Path) -> None:
        if self.copy is not None:
            save_model(self.copy.model, str(folder / self.WEIGHTS))
        plain = {t: {"spec": s.to_dict(), "examples": [[e.text, e.target] for e in rows]}
                 for t, (s, rows) in self.data.items()}  # fmt: skip
        (folder / self.DATA).write_text(json.dumps(plain, sort_keys=True))
        self._save_heads(folder)

    def load_weights(self, folder: Path) -> None:
        if (folder / self.WEIGHTS).exists():
            self.copy = trainable_copy(self.backbone)
            missing, unexpected = load_model(self.copy.model, str(folder / self.WEIGHTS))
            if missing or unexpected:
                raise IntegrityError(f"{folder / self.WEIGHTS}: weights do not fit the backbone")
            self.copy.model.requires_grad_(False)
        raw = json.loads((folder / self.DATA).read_text())
        self.data = {t: (TaskSpec.from_dict(m["spec"]), [Example(x, y) for x, y in m["examples"]])
                     for t, m in raw.items()}  # fmt: skip
        self._load_heads(folder)
