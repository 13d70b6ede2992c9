"""`train`: one task's module (and head) on a frozen backbone, read top to bottom.

The module's kind (`continual.modules`) and the objective of (backbone kind, task kind)
(`continual.objectives`) are looked up once; the loop itself (`continual.train.loop`) knows
neither.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from continual.backbones import Backbone
from continual.inference import TrainedTask, evaluate
from continual.modules import ModuleConfig, Tensors, module_for
from continual.objectives import objective_for
from continual.train.config import TrainConfig
from continual.train.data import split_validation
from continual.train.loop import adamw, lr_factor, optimize
from tasks.spec import Example, TaskData


@dataclass
class TrainResult:
    """The trained task (`task.tensors` are the ejected module) and what happened on the way.

    `state` holds what resuming needs, taken at the best step: the trainable module, the head
    and the optimizer's per-parameter moments.
    """

    task: TrainedTask
    steps: int
    best_step: int
    losses: list[float]
    validations: list[tuple[int, float]]
    seconds: float
    trainable_params: int
    stopped_early: bool
    state: dict[str, Any] = field(repr=False, default_factory=dict)
    step_seconds: list[float] = field(repr=False, default_factory=list)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")


def _validate(
    backbone: Backbone,
    task: TrainedTask,
    val: list[Example],
    config: TrainConfig,
    loss_fn: Callable[[Sequence[Example], Tensors], torch.Tensor],
) -> float:
    """Higher is better: accuracy for classification, minus the mean loss for generation."""
    if task.spec.kind == "classification":
        return evaluate(backbone, task, val, batch_size=config.eval_batch_size).score
    backbone.model.eval()  # no dropout: the same module must get the same validation loss
    try:
        with torch.no_grad():
            total, n = 0.0, 0
            for i in range(0, len(val), config.eval_batch_size):
                chunk = val[i : i + config.eval_batch_size]
                total += float(loss_fn(chunk, task.tensors)) * len(chunk)
                n += len(chunk)
    finally:
        backbone.model.train()
    return -total / max(n, 1)


def train(
    backbone: Backbone,
    data: TaskData,
    module_config: ModuleConfig,
    config: TrainConfig,
    *,
    init: Tensors | None = None,
    resume: dict[str, Any] | None = None,
    progress: bool = True,
    should_stop: Callable[[int, Callable[[], TrainedTask]], bool] | None = None,
    observe: Callable[[int, int, float], None] | None = None,
    on_validation: Callable[[int, float], bool] | None = None,
) -> TrainResult:
    """Train a module of `module_config`'s kind for `data.spec` on the frozen `backbone`.

    init: named tensors to start from exactly (a prefix: `{"prefix": [P, flat_dim]}`; None:
        the kind's random start).
    resume: a `TrainResult.state` to continue from (module, head and optimizer state).
    should_stop: asked after every step with the step and a thunk that builds the task as it
        stands then (current weights, not the best); True stops training (e.g. at a target
        score). The thunk keeps steps where the caller does not look cheap.
    observe: hears (step, steps, loss) after every step (a job's live progress).
    on_validation: hears (step, validation value) after every validation; False stops training
        (a search's pruner).
    """
    spec = data.spec
    objective = objective_for(backbone, spec)  # refuses a pair no objective handles
    kind = module_for(module_config)
    torch.manual_seed(config.seed)
    train_set, val_set = split_validation(data, config)
    limits = config.limits

    # float32 master weights on the backbone's device (cast to its dtype where they enter it)
    module = kind.build(module_config, start=init, seed=config.seed).to(backbone.device)
    head = objective.new_head(backbone, spec, seed=config.seed)
    if head is not None and resume is None and config.head_init == "probe":
        start = module.eject()
        objective.fit_head(
            backbone,
            head,
            spec,
            train_set,
            lambda n: kind.single(start, module_config, n),
            limits,
            seed=config.seed,
            batch_size=config.eval_batch_size,
        )
    params = list(module.parameters()) + (list(head.parameters()) if head else [])
    optimizer = adamw(params, lr=config.lr, weight_decay=config.weight_decay)
    if resume is not None:
        module.load_state_dict(resume["module"])
        if head is not None and resume.get("head"):
            head.load_state_dict(resume["head"])
        if resume.get("optimizer_slots"):
            # Only the per-parameter moments are restored; hyperparameters come from `config`.
            saved = optimizer.state_dict()
            saved["state"] = resume["optimizer_slots"]
            optimizer.load_state_dict(saved)
    warmup = int(config.warmup_ratio * config.steps) if resume is None else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.steps, warmup)
    )

    def loss_fn(chunk: Sequence[Example], tensors: Tensors) -> torch.Tensor:
        rows = kind.single(tensors, module_config, len(chunk))
        texts, targets = [e.text for e in chunk], [e.target for e in chunk]
        return objective.loss(backbone, head, spec, texts, targets, rows, limits)

    def train_state() -> dict[str, Any]:
        return copy.deepcopy(
            {
                "module": module.state_dict(),
                "head": head.state_dict() if head else {},
                "optimizer_slots": optimizer.state_dict()["state"],
            }
        )

    def snapshot() -> TrainedTask:
        return TrainedTask(
            spec=spec,
            config=module_config,
            tensors=module.eject(),
            head=copy.deepcopy(head).eval() if head else None,
            limits=limits,
        )

    best, best_state = snapshot(), train_state()

    def keep_best(step: int) -> None:
        nonlocal best, best_state
        best, best_state = snapshot(), train_state()

    backbone.model.train()  # dropout on in the frozen backbone, as in PEFT; weights never change
    try:
        loop = optimize(
            params=params,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_of=lambda chunk: loss_fn(chunk, module()),
            validate=lambda: _validate(backbone, snapshot(), val_set, config, loss_fn),
            on_best=keep_best,
            modules=[module, backbone.model] + ([head] if head else []),
            train_set=train_set,
            has_validation=bool(val_set),
            config=config,
            desc=f"train {spec.name}",
            progress=progress,
            should_stop=None if should_stop is None else lambda step: should_stop(step, snapshot),
            observe=observe,
            on_validation=on_validation,
        )
    finally:
        backbone.model.eval()
    if not val_set:
        keep_best(loop.steps)
    return TrainResult(
        task=best,
        steps=loop.steps,
        best_step=loop.best_step if val_set else loop.steps,
        losses=loop.losses,
        validations=loop.validations,
        seconds=loop.seconds,
        trainable_params=sum(p.numel() for p in params),
        stopped_early=loop.stopped_early,
        state=best_state,
        step_seconds=loop.step_seconds,
    )
