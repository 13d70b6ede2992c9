"""The training loop: one prefix (and head) on a frozen backbone, read top to bottom.

AdamW with linear warm-up and linear decay, gradient clipping, a seed, early stopping on a
seeded validation split carved from the training data (never the eval set, whose score is what
gets reported), and a progress bar with loss and throughput on stderr.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from tqdm import tqdm

from continual.backbones import Backbone
from continual.heads import ClassificationHead
from continual.inference import TaskPrefix, evaluate
from continual.objectives import TextLimits, decoder_loss, encoder_loss
from continual.prefix import PrefixConfig, TrainablePrefix, single
from continual.probe import HEAD_INITS, start_head
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData
from tasks.split import stratified_split


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run. `patience` counts validations without improvement
    before stopping (0 = never stop early).

    Defaults, and why:
    - `head_init="probe"`: an encoder's head starts as a logistic-regression probe of the
      starting features (`continual.probe`). With a random head the first gradients into the
      prefix are noise that AdamW turns into full-size steps; on tasks the frozen features
      separate weakly the prefix then washes the input out and the run stalls at the label
      prior (vader_nyt, 400 steps: 53.4% with a random head, 78.4% with the probe).
    - `min_best_share=0.5`: the kept ("best") prefix comes from a validation in the second
      half of the steps, and patience only counts from there. A validation split of a few
      hundred examples is noisy enough that an early lucky score (the step-50 best of an
      undertrained prefix) used to win; ties go to the later step.
    """

    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 50
    patience: int = 4
    val_fraction: float = 0.1
    val_max: int = 300
    eval_batch_size: int = 32
    max_length: int = 128
    max_target_length: int = 32
    head_init: str = "probe"
    min_best_share: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "eval_every": self.eval_every >= 1,
            "patience": self.patience >= 0,
            "val_fraction": 0 < self.val_fraction < 1,
            "max_length": self.max_length >= 8,
            "max_target_length": self.max_target_length >= 1,
            "min_best_share": 0 <= self.min_best_share <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"training option {name}={getattr(self, name)!r} is out of range")
        if self.head_init not in HEAD_INITS:
            raise ConfigError(
                f"training option head_init={self.head_init!r} is not one of {HEAD_INITS}"
            )

    @property
    def limits(self) -> TextLimits:
        return TextLimits(max_length=self.max_length, max_target_length=self.max_target_length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


@dataclass
class TrainResult:
    """The trained task (`task.prefix` is the ejected prefix) and what happened on the way.

    `state` holds what resuming needs, taken at the best step: the reparameterized module, the
    head and the optimizer's per-parameter moments.
    """

    task: TaskPrefix
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


def adamw(params: list[torch.nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where torch has one for the parameters' device and dtype
    (CPU float32 included): the same update as the default multi-tensor AdamW, about 4x faster
    on a prefix's 2.6M parameters (1.1 ms against 4.3 ms a step on 2 cores)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def batches(examples: Sequence[Example], batch_size: int, seed: int):
    """Endless seeded batches: a fresh shuffle every epoch, the same for the same seed."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for i in range(
            0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size
        ):
            yield [examples[j] for j in order[i : i + batch_size]]


def split_validation(data: TaskData, config: TrainConfig) -> tuple[list[Example], list[Example]]:
    """(train, validation): a seeded, stratified slice of the training data, at most val_max."""
    if len(data.train) < 10:
        return list(data.train), []
    fraction = min(config.val_fraction, config.val_max / len(data.train))
    # Generation targets are (nearly) all distinct: stratifying by them would hold out nothing.
    rest, held = stratified_split(
        list(data.train),
        fraction=fraction,
        seed=config.seed,
        stratified=data.spec.kind == "classification",
    )
    return list(rest), list(held)


def _validate(
    backbone: Backbone, task: TaskPrefix, val: list[Example], config: TrainConfig, loss_fn
) -> float:
    """Higher is better: accuracy for classification, minus the mean loss for generation."""
    if task.spec.kind == "classification":
        return evaluate(backbone, task, val, batch_size=config.eval_batch_size).score
    backbone.model.eval()  # no dropout: the same prefix must get the same validation loss
    try:
        with torch.no_grad():
            total, n = 0.0, 0
            for i in range(0, len(val), config.eval_batch_size):
                chunk = val[i : i + config.eval_batch_size]
                total += float(loss_fn(chunk, task.prefix)) * len(chunk)
                n += len(chunk)
    finally:
        backbone.model.train()
    return -total / max(n, 1)


@dataclass
class LoopResult:
    """What one optimization loop did: steps run, the best validated step, losses per step."""

    steps: int
    best_step: int
    losses: list[float]
    validations: list[tuple[int, float]]
    seconds: float
    stopped_early: bool
    step_seconds: list[float] = field(default_factory=list)


def optimize(
    *,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_of: Callable[[Sequence[Example]], torch.Tensor],
    validate: Callable[[], float],
    on_best: Callable[[int], None],
    modules: Sequence[torch.nn.Module],
    train_set: Sequence[Example],
    has_validation: bool,
    config: TrainConfig,
    desc: str,
    progress: bool,
    should_stop: Callable[[int], bool] | None = None,
) -> LoopResult:
    """The one training loop (prefixes and the fine-tuning baseline both run it).

    Each step: seeded batch, loss, clipped AdamW step, schedule step. Every `eval_every` steps
    (and at the end) `validate()` scores the current weights, higher is better; `on_best(step)`
    is called when it improves, and `patience` validations without improvement stop the loop.
    `modules` are put back in train mode before every step (validation may switch them off).
    `should_stop(step)`, if given, is asked after every step (after validation when one is
    due); True ends the loop (a caller's own criterion at its own cadence, e.g. a target score).
    """
    losses: list[float] = []
    step_seconds: list[float] = []  # batch to update, validation excluded (the benchmarks read it)
    validations: list[tuple[int, float]] = []
    best_score, best_step, bad, stopped = -math.inf, 0, 0, False
    started = time.perf_counter()
    bar = tqdm(
        total=config.steps,
        desc=desc,
        unit="step",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    step = 0
    stream = batches(train_set, config.batch_size, config.seed)
    try:
        for step in range(1, config.steps + 1):
            for m in modules:
                m.train()
            began = time.perf_counter()
            loss = loss_of(next(stream))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step_seconds.append(time.perf_counter() - began)
            bar.update(1)
            bar.set_postfix(
                loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}",
                ex_s=f"{step * config.batch_size / (time.perf_counter() - started):.1f}",
            )
            if has_validation and (step % config.eval_every == 0 or step == config.steps):
                value = validate()
                validations.append((step, value))
                if step >= config.min_best_share * config.steps:  # earlier: neither kept nor
                    bad = 0 if value > best_score else bad + 1  # counted towards stopping
                    if value >= best_score:  # a tie keeps the longer-trained weights
                        best_score, best_step = value, step
                        on_best(step)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", val=f"{value:.4f}")
                if config.patience and bad >= config.patience:
                    stopped = True
                    break
            if should_stop is not None and should_stop(step):
                stopped = True
                break
    finally:
        bar.close()
    return LoopResult(
        steps=step,
        best_step=best_step,
        losses=losses,
        validations=validations,
        seconds=time.perf_counter() - started,
        stopped_early=stopped,
        step_seconds=step_seconds,
    )


def train(
    backbone: Backbone,
    data: TaskData,
    prefix_config: PrefixConfig,
    config: TrainConfig,
    *,
    init: torch.Tensor | None = None,
    resume: dict[str, Any] | None = None,
    progress: bool = True,
    should_stop: Callable[[int, Callable[[], TaskPrefix]], bool] | None = None,
) -> TrainResult:
    """Train a prefix for `data.spec` on the frozen `backbone`.

    init: a flat `[P, flat_dim]` prefix to start from exactly (None: random).
    resume: a `TrainResult.state` to continue from (module, head and optimizer state).
    should_stop: asked after every step with the step and a thunk that builds the task as it
        stands then (current weights, not the best); True stops training (e.g. at a target
        score). The thunk keeps steps where the caller does not look cheap.
    """
    spec = data.spec
    if backbone.kind == "encoder" and spec.kind != "classification":
        raise ConfigError(
            f"task {spec.name}: encoder backbone {backbone.name} only does classification; "
            "use a decoder backbone (e.g. smollm2) for generation"
        )
    torch.manual_seed(config.seed)
    train_set, val_set = split_validation(data, config)
    limits = config.limits

    module = TrainablePrefix(prefix_config, base=init, seed=config.seed)
    head = (
        ClassificationHead(backbone.geometry.hidden_size, len(spec.labels), seed=config.seed)
        if backbone.kind == "encoder"
        else None
    )
    if head is not None and resume is None and config.head_init == "probe":
        start_head(
            backbone,
            head,
            spec,
            train_set,
            module.eject(),
            prefix_config,
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

    def loss_fn(chunk: Sequence[Example], flat: torch.Tensor) -> torch.Tensor:
        rows = single(flat, prefix_config, len(chunk))
        texts, targets = [e.text for e in chunk], [e.target for e in chunk]
        if head is not None:
            return encoder_loss(backbone, head, spec, texts, targets, rows, limits)
        return decoder_loss(backbone, spec, texts, targets, rows, limits)

    def train_state() -> dict[str, Any]:
        return copy.deepcopy(
            {
                "module": module.state_dict(),
                "head": head.state_dict() if head else {},
                "optimizer_slots": optimizer.state_dict()["state"],
            }
        )

    def snapshot() -> TaskPrefix:
        return TaskPrefix(
            spec=spec,
            config=prefix_config,
            prefix=module.eject(),
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


def flatten_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A `TrainResult.state` as flat named tensors (what the registry stores beside a prefix).

    Optimizer hyperparameters are not stored: a resumed run takes them from its own config.
    """
    flat = {f"module.{k}": v for k, v in state["module"].items()}
    flat.update({f"head.{k}": v for k, v in state.get("head", {}).items()})
    for index, slots in state.get("optimizer_slots", {}).items():
        for key, value in slots.items():
            flat[f"optim.{index}.{key}"] = torch.as_tensor(value)
    return {k: v.detach().contiguous() for k, v in flat.items()}


def unflatten_state(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The inverse of `flatten_state`."""
    module = {k[len("module.") :]: v for k, v in flat.items() if k.startswith("module.")}
    head = {k[len("head.") :]: v for k, v in flat.items() if k.startswith("head.")}
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        if k.startswith("optim."):
            _, index, key = k.split(".", 2)
            slots.setdefault(int(index), {})[key] = v
    return {"module": module, "head": head, "optimizer_slots": slots}
