"""Scores on literal examples whose values were worked out by hand."""

from __future__ import annotations

import hashlib
import math

import pytest

from continual.scoring import accuracy, bleu, mean_rouge_l, predictions_sha256, rouge_l, words


def test_words_ignore_case_and_punctuation() -> None:
    assert words("The CAT, sat... on 2 mats!") == ["the", "cat", "sat", "on", "2", "mats"]


def test_accuracy() -> None:
    assert accuracy(["a", "b", "c"], ["a", "x", "c"]) == pytest.approx(2 / 3)
    assert accuracy(["a"], ["A"]) == 0.0  # labels are compared exactly
    assert accuracy([], []) == 0.0


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # LCS "the cat on the mat" = 5 of 6 words each side: P = R = F = 5/6
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
        # LCS 2: P = 2/2, R = 2/4, F = 2 * 1 * 0.5 / 1.5
        ("the cat", "the cat sat down", 2 / 3),
        ("A cat!", "a CAT", 1.0),
        ("dog", "cat", 0.0),
        ("", "", 1.0),
        ("", "cat", 0.0),
        ("...", "cat", 0.0),  # no words at all
        # order matters: LCS of "b a" and "a b" is 1 -> P = R = F = 1/2
        ("b a", "a b", 0.5),
    ],
)
def test_rouge_l(prediction: str, reference: str, expected: float) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_mean_rouge_l() -> None:
    assert mean_rouge_l(["the cat", "dog"], ["the cat sat down", "dog"]) == pytest.approx(5 / 6)
    assert mean_rouge_l([], []) == 0.0


@pytest.mark.parametrize(
    ("predictions", "references", "expected"),
    [
        (["the cat sat on the mat"], ["the cat sat on the mat"], 1.0),
        # every precision 1 (smoothed (0+1)/(0+1) for 4-grams), brevity exp(1 - 6/3)
        (["the cat sat"], ["the cat sat on the mat"], math.exp(-1)),
        # clipped unigrams 1/4; smoothed 1/4, 1/3, 1/2; no brevity penalty (4 > 2 words)
        (["the the the the"], ["the cat"], (1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** 0.25),
        # corpus level: unigrams 3/4, bigrams (1+1)/(2+1), higher orders (0+1)/(0+1)
        (["a b", "c d"], ["a b", "c e"], (3 / 4 * 2 / 3) ** 0.25),
        (["dog"], ["cat"], 0.0),
        ([""], ["cat"], 0.0),
    ],
)
def test_bleu(predictions: list[str], references: list[str], expected: float) -> None:
    assert bleu(predictions, references) == pytest.approx(expected)


def test_predictions_sha256_is_stable_and_order_sensitive() -> None:
    preds = ["positive", "negative", "café"]
    # Pinned: the hash is recorded in the registry, so its definition must never drift.
    assert predictions_sha256(preds) == (
        "bf94a4ec08f58d2e9cc7ea878534175e822643028e76b86302e7da9ec53cf496"
    )
    assert predictions_sha256(preds) == predictions_sha256(tuple(preds))
    assert predictions_sha256([]) == hashlib.sha256(b"[]").hexdigest()
    assert predictions_sha256(preds[::-1]) != predictions_sha256(preds)
    assert predictions_sha256(["ab"]) != predictions_sha256(["a", "b"])
    assert predictions_sha256(["a b"]) != predictions_sha256(["a", "b"])
