"""Full fine-tuning of a trainable copy of the backbone: the `sequential-ft` baseline's loop.

The copy is made with `trainable_copy`; the frozen backbone the task modules use is never
touched. Each task is trained and answered by its objective (`continual.objectives`: a head
over pooled features on encoders, text to text on decoders), exactly as task modules are, only
with no module. The loop mirrors `continual.train.train` (AdamW, linear warm-up and decay, clipping, a
seed, early stopping on a seeded validation split of the training data) so the two compare on
equal terms.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from continual.backbones import Backbone
from continual.inference import EvalResult, score
from continual.objectives import TextLimits, objective_for
from continual.train import TrainConfig, adamw, lr_factor, optimize, split_validation
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData, TaskSpec


def trainable_copy(backbone: Backbone) -> Backbone:
    """A deep copy of `backbone` whose weights can train, in float32 on the backbone's device
    (full fine-tuning keeps float32 weights whatever the frozen backbone's dtype); the original
    stays frozen."""
    model = copy.deepcopy(backbone.model).float()
    for p in model.parameters():
        p.requires_grad_(True)
    runtime = replace(backbone.runtime, dtype="float32")
    return replace(
        backbone,
        model=model.eval(),
        fingerprint=f"trainable copy of {backbone.name}",
        runtime=runtime,
        versions=(),
    )


def fresh_head(backbone: Backbone, spec: TaskSpec, seed: int) -> nn.Module | None:
    """The head a new task starts with (None if its objective has none), seeded as
    `continual.train` seeds its own."""
    return objective_for(backbone, spec).new_head(backbone, spec, seed=seed)


@torch.no_grad()
def predict_plain(
    backbone: Backbone,
    head: nn.Module | None,
    spec: TaskSpec,
    texts: Sequence[str],
    *,
    batch_size: int,
    limits: TextLimits,
) -> list[str]:
    """Answers of the backbone with no module, `batch_size` texts per pass, in order."""
    objective = objective_for(backbone, spec)
    was_training = backbone.model.training
    backbone.model.eval()
    if head is not None:
        head.to(backbone.device).eval()
    out: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            out += objective.predict_task(backbone, spec, head, chunk, None, limits)
    finally:
        backbone.model.train(was_training)
    return out


def evaluate_plain(
    backbone: Backbone,
    head: nn.Module | None,
    spec: TaskSpec,
    examples: Sequence[Example],
    *,
    batch_size: int,
    limits: TextLimits,
) -> EvalResult:
    preds = predict_plain(
        backbone, head, spec, [e.text for e in examples], batch_size=batch_size, limits=limits
    )
    return score(spec, preds, examples)


@dataclass
class FinetuneResult:
    steps: int
    best_step: int
    losses: list[float]
    seconds: float
    stopped_early: bool


def finetune(
    backbone: Backbone,
    head: nn.Module | None,
    data: TaskData,
    config: TrainConfig,
    *,
    progress: bool = True,
    extra_loss: Callable[[Sequence[Example]], torch.Tensor] | None = None,
    more_params: Sequence[nn.Parameter] = (),
) -> FinetuneResult:
    """Train every weight of `backbone` (a `trainable_copy`) and `head` on `data`, in place.

    On return both hold the weights of the best validation step. `extra_loss(batch)`, if
    given, is added to each step's loss (a rehearsal, penalty or distillation term of the
    continual-learning baselines); `more_params` train too (earlier tasks' heads).
    """
    spec, limits = data.spec, config.limits
    objective = objective_for(backbone, spec)  # refuses a pair no objective handles
    torch.manual_seed(config.seed)
    train_set, val_set = split_validation(data, config)
    model = backbone.model
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(head.parameters()) if head is not None else []
    params += [p for p in more_params if p.requires_grad]
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("finetune needs a trainable copy of the backbone (trainable_copy)")
    optimizer = adamw(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(config.warmup_ratio * config.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.steps, warmup)
    )

    def task_loss(chunk: Sequence[Example]) -> torch.Tensor:
        texts, targets = [e.text for e in chunk], [e.target for e in chunk]
        return objective.loss(backbone, head, spec, texts, targets, None, limits)

    def loss_fn(chunk: Sequence[Example]) -> torch.Tensor:
        loss = task_loss(chunk)
        return loss if extra_loss is None else loss + extra_loss(chunk)

    def validate() -> float:
        """Higher is better: accuracy, or minus the mean loss for generation."""
        if spec.kind == "classification":
            return evaluate_plain(
                backbone, head, spec, val_set, batch_size=config.eval_batch_size, limits=limits
            ).score
        with torch.no_grad():
            model.eval()
            total = sum(
                float(task_loss(val_set[i : i + config.eval_batch_size]))
                * len(val_set[i : i + config.eval_batch_size])
                for i in range(0, len(val_set), config.eval_batch_size)
            )
        return -total / max(len(val_set), 1)

    def state() -> dict[str, dict[str, torch.Tensor]]:
        return {
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "head": copy.deepcopy(head.state_dict()) if head is not None else {},
        }

    best: dict[str, dict[str, torch.Tensor]] | None = None

    def keep_best(step: int) -> None:
        nonlocal best
        best = state()

    try:
        loop = optimize(
            params=params,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_of=loss_fn,
            validate=validate,
            on_best=keep_best,
            modules=[model] + ([head] if head is not None else []),
            train_set=train_set,
            has_validation=bool(val_set),
            config=config,
            desc=f"fine-tune {spec.name}",
            progress=progress,
        )
    finally:
        model.eval()
    if best is not None:
        model.load_state_dict(best["model"])
        if head is not None:
            head.load_state_dict(best["head"])
    optimizer.zero_grad(set_to_none=True)
    return FinetuneResult(
        steps=loop.steps,
        best_step=loop.best_step if best is not None else loop.steps,
        losses=loop.losses,
        seconds=loop.seconds,
        stopped_early=loop.stopped_early,
    )
