"""Continual-learning metrics on literal accuracy matrices, checked by hand."""

from __future__ import annotations

import math

import pytest

from continual import metrics as m

NAN = float("nan")

# Three arrivals. Task 0 peaks after arrival 1 (0.9) and ends at 0.6; task 1 goes 0.8 -> 0.7.
R3 = [
    [0.8, None, None],
    [0.9, 0.8, None],
    [0.6, 0.7, 0.5],
]


def test_average_accuracy_is_the_mean_of_the_last_row() -> None:
    assert m.average_accuracy(R3) == pytest.approx((0.6 + 0.7 + 0.5) / 3)
    assert m.average_accuracy([[0.25]]) == 0.25
    assert m.average_accuracy([]) is None


def test_backward_transfer_as_in_gem() -> None:
    # (R[2][0] - R[0][0] + R[2][1] - R[1][1]) / 2 = (-0.2 - 0.1) / 2
    assert m.backward_transfer(R3) == pytest.approx(-0.15)


def test_backward_transfer_can_be_positive() -> None:
    assert m.backward_transfer([[0.5, None], [0.75, 0.9]]) == pytest.approx(0.25)


def test_forgetting_from_the_best_earlier_score_chaudhry() -> None:
    # task 0: max(0.8, 0.9) - 0.6 = 0.3; task 1: max(0.8) - 0.7 = 0.1
    assert m.forgetting_max(R3) == pytest.approx(0.2)


def test_forgetting_first_minus_last_avalanche() -> None:
    # task 0: 0.8 - 0.6 = 0.2; task 1: 0.8 - 0.7 = 0.1
    assert m.forgetting_last(R3) == pytest.approx(0.15)


def test_the_two_forgettings_differ_when_a_task_improved_after_its_arrival() -> None:
    assert m.forgetting_max(R3) != pytest.approx(m.forgetting_last(R3))


def test_forward_transfer_skips_the_first_task() -> None:
    init = [0.9, 0.6, 0.55]
    random = [0.1, 0.5, 0.5]  # task 0's terms never count
    assert m.forward_transfer(init, random) == pytest.approx((0.1 + 0.05) / 2)


def test_forward_transfer_of_identical_starts_is_exactly_zero() -> None:
    scores = [0.5, 0.48, 0.731]
    assert m.forward_transfer(scores, list(scores)) == 0.0


def test_a_constant_column_gives_exactly_zero_transfer_and_forgetting() -> None:
    R = [[0.9, None, None], [0.9, 0.7, None], [0.9, 0.7, 0.3]]
    s = m.summary(R)
    assert s["bwt"] == 0.0 and s["forgetting_max"] == 0.0 and s["forgetting_last"] == 0.0
    assert s["acc"] == pytest.approx((0.9 + 0.7 + 0.3) / 3)


def test_one_arrival_has_no_transfer_or_forgetting() -> None:
    s = m.summary([[0.7]], [0.7], [0.7])
    assert s == {
        "acc": 0.7,
        "bwt": None,
        "fwt": None,
        "forgetting_max": None,
        "forgetting_last": None,
    }


def test_undefined_entries_are_skipped_not_zeroed() -> None:
    R = [[0.8, None, None], [NAN, 0.6, None], [0.5, None, 0.4]]
    # task 1 has no final score: only task 0 counts
    assert m.backward_transfer(R) == pytest.approx(-0.3)
    assert m.forgetting_last(R) == pytest.approx(0.3)
    assert m.forgetting_max(R) == pytest.approx(0.3)  # the NaN at R[1][0] is not a maximum
    assert m.average_accuracy(R) == pytest.approx(0.45)
    assert m.forward_transfer([None, 0.5, NAN], [0.2, 0.25, 0.1]) == pytest.approx(0.25)
    assert m.forward_transfer([0.1], [0.2]) is None


def test_entries_above_the_diagonal_are_ignored() -> None:
    R = [[0.8, 0.1, 0.1], [0.7, 0.6, 0.1], [0.6, 0.5, 0.4]]
    assert m.lower_triangle(R) == [[0.8, None, None], [0.7, 0.6, None], [0.6, 0.5, 0.4]]
    assert m.backward_transfer(R) == pytest.approx(-0.15)


def test_lower_triangle_turns_nan_into_none() -> None:
    out = m.lower_triangle([[NAN], [0.5, 0.25]])
    assert out[0][0] is None and out[1] == [0.5, 0.25]
    assert not any(isinstance(x, float) and math.isnan(x) for row in out for x in row)


def test_the_functions_are_pure() -> None:
    R = [list(r) for r in R3]
    m.summary(R, [0, 1, 2], [0, 1, 2])
    assert R == R3
