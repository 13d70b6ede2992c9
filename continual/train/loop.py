"""The one training loop (task modules and the fine-tuning baseline both run it), read top to
bottom, with its tiny pure helpers: the optimizer and the learning-rate schedule.

AdamW with linear warm-up and linear decay, gradient clipping, a seed, early stopping on a
validation score, and a progress bar with loss and throughput on stderr.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from continual.train.config import TrainConfig
from continual.train.data import batches
from tasks.spec import Example


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
    observe: Callable[[int, int, float], None] | None = None,
    on_validation: Callable[[int, float], bool] | None = None,
) -> LoopResult:
    """The one training loop (prefixes and the fine-tuning baseline both run it).

    Each step: seeded batch, loss, clipped AdamW step, schedule step. Every `eval_every` steps
    (and at the end) `validate()` scores the current weights, higher is better; `on_best(step)`
    is called when it improves, and `patience` validations without improvement stop the loop.
    `modules` are put back in train mode before every step (validation may switch them off).
    `should_stop(step)`, if given, is asked after every step (after validation when one is
    due); True ends the loop (a caller's own criterion at its own cadence, e.g. a target score).
    `observe(step, steps, loss)`, if given, hears every step (a job's live progress).
    `on_validation(step, value)`, if given, hears every validation; False ends the loop (a
    search trial pruned on its validation curve).
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
            if observe is not None:
                observe(step, config.steps, losses[-1])
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
                if on_validation is not None and not on_validation(step, value):
                    stopped = True
                    break
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
