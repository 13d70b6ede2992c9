"""Seeded, deterministic splits and subsamples of examples, and the data fingerprint.

Everything here is a pure function of its arguments: the same examples and seed give the same
result in every process (randomness comes from `random.Random(seed)`, never from `hash()`), so a
task's splits can be rebuilt from the seed recorded in its spec. Selections keep the examples'
original order, so a split is a choice of rows, not a reshuffle.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence

from tasks.errors import ConfigError, DataError
from tasks.spec import Example, TaskData, TaskSpec


def _groups(examples: Sequence[Example], stratified: bool) -> list[list[int]]:
    """Row indices grouped by target (sorted by target, so the order never depends on input)."""
    if not stratified:
        return [list(range(len(examples)))]
    by_target: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_target.setdefault(ex.target, []).append(i)
    return [by_target[t] for t in sorted(by_target)]


def _apportion(sizes: list[int], total: int, lo: list[int], hi: list[int]) -> list[int]:
    """Share `total` picks among groups in proportion to `sizes`, each within `[lo, hi]`.

    Largest-remainder rounding; ties go to the earlier group, so the answer is deterministic.
    `total` is first clamped into `[sum(lo), sum(hi)]`.
    """
    n = sum(sizes)
    total = max(sum(lo), min(total, sum(hi)))
    quotas = [total * s / n if n else 0.0 for s in sizes]
    counts = [min(max(math.floor(q), a), b) for q, a, b in zip(quotas, lo, hi, strict=True)]
    order_up = sorted(range(len(sizes)), key=lambda g: (-(quotas[g] - counts[g]), g))
    order_down = sorted(range(len(sizes)), key=lambda g: (-(counts[g] - quotas[g]), g))
    while sum(counts) < total:
        for g in order_up:
            if counts[g] < hi[g] and sum(counts) < total:
                counts[g] += 1
    while sum(counts) > total:
        for g in order_down:
            if counts[g] > lo[g] and sum(counts) > total:
                counts[g] -= 1
    return counts


def _pick(groups: list[list[int]], counts: list[int], seed: int) -> set[int]:
    rng = random.Random(seed)
    chosen: set[int] = set()
    for members, k in zip(groups, counts, strict=True):
        chosen.update(rng.sample(members, k))
    return chosen


def stratified_split(
    examples: Sequence[Example], *, fraction: float, seed: int, stratified: bool = True
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """Split `examples` into `(rest, held_out)` with about `fraction` of them held out.

    With `stratified` (classification), each target keeps its proportion on both sides; a target
    with at least two examples gets at least one held out, and every target keeps at least one
    in `rest`, so the held-out side never has a label the other side lacks. Without it
    (generation), rows are held out by a plain seeded draw. Both sides keep the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"split fraction {fraction} must be between 0 and 1 (exclusive)")
    if len(examples) < 2:
        raise DataError(
            f"cannot split {len(examples)} example(s) into train and eval; "
            "supply more rows or a separate eval file"
        )
    groups = _groups(examples, stratified)
    sizes = [len(g) for g in groups]
    lo = [1 if s >= 2 else 0 for s in sizes] if stratified else [1]
    hi = [s - 1 for s in sizes]
    counts = _apportion(sizes, round(len(examples) * fraction), lo, hi)
    held = _pick(groups, counts, seed)
    rest = tuple(ex for i, ex in enumerate(examples) if i not in held)
    return rest, tuple(ex for i, ex in enumerate(examples) if i in held)


def subsample(
    examples: Sequence[Example], n: int, *, seed: int, stratified: bool = True
) -> tuple[Example, ...]:
    """Keep `n` of `examples`, chosen by `seed`; all of them when there are no more than `n`.

    With `stratified`, label proportions are kept (largest-remainder rounding) and every label
    keeps at least one example whenever `n` is at least the number of labels.
    """
    if n < 1:
        raise ConfigError(f"subsample size {n} must be at least 1")
    if n >= len(examples):
        return tuple(examples)
    groups = _groups(examples, stratified)
    sizes = [len(g) for g in groups]
    lo = [1] * len(groups) if n >= len(groups) else [0] * len(groups)
    counts = _apportion(sizes, n, lo, sizes)
    keep = _pick(groups, counts, seed)
    return tuple(ex for i, ex in enumerate(examples) if i in keep)


def fingerprint(train: Sequence[Example], eval: Sequence[Example]) -> str:
    """The sha256 of the examples, train then eval, each side tagged so moving a row changes it.

    Only the examples count (not file names or formats), so the same data read from JSONL or CSV
    has the same fingerprint.
    """
    h = hashlib.sha256()
    for side, rows in (("train", train), ("eval", eval)):
        for ex in rows:
            line = json.dumps([side, ex.text, ex.target], ensure_ascii=False)
            h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


def assemble(
    spec: TaskSpec,
    train: Sequence[Example],
    eval: Sequence[Example] | None,
    *,
    max_train: int | None = None,
    eval_fraction: float = 0.2,
) -> TaskData:
    """Finish a task: carve an eval split when there is none, cap train, fingerprint the result.

    Both steps use `spec.seed` and are recorded in `spec.extra` (`eval_split`, `max_train`), so
    the returned spec says how to make the same data again. Examples must already be validated.
    """
    extra = list(spec.extra)
    classify = spec.kind == "classification"
    if eval is None:
        train, eval = stratified_split(
            train, fraction=eval_fraction, seed=spec.seed, stratified=classify
        )
        how = "stratified " if classify else ""
        extra.append(("eval_split", f"seeded {how}{eval_fraction:.0%} of train, seed {spec.seed}"))
    if max_train is not None:
        before = len(train)
        train = subsample(train, max_train, seed=spec.seed, stratified=classify)
        if len(train) < before:
            how = "stratified " if classify else ""
            extra.append(
                (
                    "max_train",
                    f"seeded {how}subsample of {len(train)} of {before}, seed {spec.seed}",
                )
            )
    train, eval = tuple(train), tuple(eval)
    return TaskData(
        spec=spec.with_(extra=tuple(extra)),
        train=train,
        eval=eval,
        fingerprint=fingerprint(train, eval),
    )
