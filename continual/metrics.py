"""Continual-learning metrics: pure functions over the accuracy matrix.

`R[i][j]` is the score on task j after arrival i (0-based; task j arrives at position j), `None`
or NaN where undefined (j > i, or a score that was never taken). `T = len(R)` arrivals. Every
function skips undefined entries and returns `None` when no term is defined (e.g. backward
transfer after a single arrival), never a made-up 0.

- `average_accuracy`: mean of the last row, over the tasks seen so far.
- `backward_transfer` (GEM, Lopez-Paz & Ranzato 2017): mean over the first T-1 tasks of
  `R[T-1][j] - R[j][j]`; negative means forgetting.
- `forward_transfer` (GEM's definition with our reference points): mean over tasks j >= 1 of
  `init[j] - random[j]`, the score of the learner's starting point for task j at its arrival
  (before training on it) minus the score of a randomly initialised one.
- `forgetting_max` (Chaudhry et al. 2018): mean over the first T-1 tasks of
  `max_{l < T-1} R[l][j] - R[T-1][j]`, the drop from the best earlier score.
- `forgetting_last` (Avalanche's `forgetting`): mean over the first T-1 tasks of
  `R[j][j] - R[T-1][j]`, the drop from the score at the task's own arrival.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Matrix = Sequence[Sequence[float | None]]


def defined(x: Any) -> bool:
    """True for a real number (not None, not NaN)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def entry(R: Matrix, i: int, j: int) -> float | None:
    """`R[i][j]` as a float, or None where it is undefined or outside the matrix."""
    if not 0 <= i < len(R) or not 0 <= j < len(R[i]):
        return None
    x = R[i][j]
    return float(x) if defined(x) else None


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def average_accuracy(R: Matrix) -> float | None:
    """Mean of the last row over its defined entries."""
    if not R:
        return None
    T = len(R)
    return _mean([entry(R, T - 1, j) for j in range(T)])


def backward_transfer(R: Matrix) -> float | None:
    """GEM's BWT: mean over j < T-1 of `R[T-1][j] - R[j][j]`."""
    T = len(R)
    return _mean([_diff(entry(R, T - 1, j), entry(R, j, j)) for j in range(T - 1)])


def forward_transfer(init: Sequence[float | None], random: Sequence[float | None]) -> float | None:
    """GEM's FWT with the learner's own starting point: mean over j >= 1 of
    `init[j] - random[j]` (task 0 has no earlier task to transfer from)."""
    n = min(len(init), len(random))
    terms = []
    for j in range(1, n):
        a, b = init[j], random[j]
        terms.append(_diff(float(a), float(b)) if defined(a) and defined(b) else None)
    return _mean(terms)


def forgetting_max(R: Matrix) -> float | None:
    """Chaudhry et al.'s forgetting: mean over j < T-1 of the best score of task j before the
    last arrival minus its score after it."""
    T = len(R)
    terms = []
    for j in range(T - 1):
        earlier = [x for x in (entry(R, lv, j) for lv in range(T - 1)) if x is not None]
        terms.append(_diff(max(earlier), entry(R, T - 1, j)) if earlier else None)
    return _mean(terms)


def forgetting_last(R: Matrix) -> float | None:
    """Avalanche's forgetting: mean over j < T-1 of `R[j][j] - R[T-1][j]`."""
    T = len(R)
    return _mean([_diff(entry(R, j, j), entry(R, T - 1, j)) for j in range(T - 1)])


def summary(
    R: Matrix,
    init: Sequence[float | None] = (),
    random: Sequence[float | None] = (),
) -> dict[str, float | None]:
    """All of the above, keyed as in report.json."""
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(init, random),
        "forgetting_max": forgetting_max(R),
        "forgetting_last": forgetting_last(R),
    }


def lower_triangle(R: Matrix) -> list[list[float | None]]:
    """A T x T copy of `R` with None above the diagonal and for NaN, as plain floats."""
    T = len(R)
    return [[entry(R, i, j) if j <= i else None for j in range(T)] for i in range(T)]
