"""bench.routing_ceiling's bookkeeping on tasks built to be told apart or not: a misroute costs
the score only where the task it went to lacks the input's label, and the gap floor is the
task-given score times that share."""

from __future__ import annotations

import numpy as np
import pytest

from bench import routing_ceiling as rc


def _task(rng, centre: float, words: list[str], labels: tuple[str, ...], n: int = 60) -> dict:
    """A task whose features sit around `centre` and whose texts draw from `words`."""

    def texts(k: int) -> list[str]:
        return [" ".join(rng.choice(words, 6)) for _ in range(k)]

    return {
        "keys": rng.normal(centre, 0.3, (n, 8)),
        "train": rng.normal(centre, 0.3, (n, 8)),
        "eval": rng.normal(centre, 0.3, (n, 8)),
        "train_texts": texts(n),
        "eval_texts": texts(n),
        "targets": [labels[i % len(labels)] for i in range(n)],
        "labels": set(labels),
    }


SPAM, SENTIMENT = ("spam", "ham"), ("positive", "negative")
SHARED = ["ok", "see", "you", "later", "good", "day"]


def test_tasks_apart_route_right_and_leave_no_floor() -> None:
    rng = np.random.default_rng(0)
    feats = {
        "a": _task(rng, -3.0, ["alpha", "beta", "gamma"], SPAM),
        "b": _task(rng, 3.0, ["delta", "eps", "zeta"], SENTIMENT),
    }
    out = rc.ceiling(feats, ["a", "b"], {"a": 0.9, "b": 0.8})
    for name in rc.ROUTERS:
        assert out[name]["accuracy"] == 1.0
        assert out[name]["lost"] == {"a": 0.0, "b": 0.0} and out[name]["floor"] == 0.0


def test_overlapping_tasks_cost_only_where_their_labels_differ() -> None:
    rng = np.random.default_rng(1)
    # b and c are one distribution with the same labels; a is that distribution too, but spam
    feats = {
        "a": _task(rng, 0.0, SHARED, SPAM),
        "b": _task(rng, 0.0, SHARED, SENTIMENT),
        "c": _task(rng, 0.0, SHARED, SENTIMENT),
    }
    given = {"a": 1.0, "b": 0.5, "c": 0.5}
    out = rc.ceiling(feats, ["a", "b", "c"], given)
    row = out["all_train"]
    assert row["accuracy"] < 0.8  # nothing tells them apart
    # an input of b sent to c keeps its label; sent to a it cannot be answered right
    assert row["lost"]["b"] < 1 - row["per_task"]["b"]
    assert row["lost"]["a"] == pytest.approx(1 - row["per_task"]["a"])  # a shares no label
    assert row["floor"] == pytest.approx(
        (1.0 * row["lost"]["a"] + 0.5 * row["lost"]["b"] + 0.5 * row["lost"]["c"]) / 3
    )
    assert row["floor"] > 0


def test_no_floor_without_every_task_s_given_score() -> None:
    rng = np.random.default_rng(2)
    feats = {
        "a": _task(rng, -3.0, ["xray", "yak"], SPAM),
        "b": _task(rng, 3.0, ["umbra", "vex"], SPAM),
    }
    out = rc.ceiling(feats, ["a", "b"], {"a": 0.9})
    assert "floor" not in out["stored_256"] and out["stored_256"]["accuracy"] == 1.0


def test_the_stored_router_keeps_examples_of_lost_inputs_only() -> None:
    rng = np.random.default_rng(3)
    feats = {"a": _task(rng, 0.0, SHARED, SPAM), "b": _task(rng, 0.0, SHARED, SENTIMENT)}
    out = rc.ceiling(feats, ["a", "b"], {})
    seen = out["stored_256"]["lost_examples"]
    assert seen and len([e for e in seen if e["task"] == "a"]) <= 2
    for e in seen:
        assert e["routed_to"] != e["task"] and e["label"] in feats[e["task"]]["labels"]
        assert e["label"] not in feats[e["routed_to"]]["labels"]
        assert e["text"] in feats[e["task"]]["eval_texts"]
