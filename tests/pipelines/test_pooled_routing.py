"""Answers when the task is not given: the router's candidates, the pooled label (the answer most
likely right over the candidate tasks), router probabilities from both routers, and
`AutoPredictor.answer_unknown` on real prefixes of the tiny encoder."""

from __future__ import annotations

import numpy as np
import pytest

from continual import routing
from continual.inference import predict, predict_probs
from continual.modules import module_kind
from continual.routing import RidgeStats, Router, candidates, pooled_label
from continual.train import TrainConfig, train
from pipelines.serve import AutoPredictor
from tasks.spec import TaskSpec
from tests.continual.test_module_seam import data


def test_candidates_are_the_top_task_and_the_likely_others_at_most_pool_max() -> None:
    assert candidates(np.array([0.1, 0.7, 0.2])) == [1, 2, 0]
    assert candidates(np.array([0.01, 0.96, 0.03])) == [1]  # the others under POOL_MIN
    assert candidates(np.array([0.5, 0.5])) == [0, 1]  # a tie: the lowest index first
    four = np.array([0.25, 0.25, 0.25, 0.25])
    assert len(candidates(four)) == routing.POOL_MAX


def test_the_pooled_label_sums_the_evidence_of_tasks_that_share_labels() -> None:
    # The top task (0: spam or ham) loses to two sentiment tasks that agree on "positive".
    weights = {0: 0.4, 1: 0.35, 2: 0.25}
    probs = {
        0: {"ham": 0.9, "spam": 0.1},
        1: {"negative": 0.2, "positive": 0.8},
        2: {"negative": 0.3, "positive": 0.7},
    }
    # positive: 0.35 * 0.8 + 0.25 * 0.7 = 0.455 > ham: 0.4 * 0.9 = 0.36
    assert pooled_label(weights, probs) == ("positive", 1)
    # Alone, the top task's own answer wins: pooling never invents a label nobody gave.
    assert pooled_label({0: 1.0}, {0: probs[0]}) == ("ham", 0)
    # A confident top task keeps its answer against a weak same-label pair.
    assert pooled_label({0: 0.8, 1: 0.1, 2: 0.1}, probs)[0] == "ham"


def test_router_probabilities_sum_to_one_and_agree_with_route() -> None:
    rng = np.random.default_rng(0)
    keys = {f"t{i}": rng.normal(i, 1.0, size=(40, 8)) for i in range(3)}
    x = rng.normal(1.0, 1.5, size=(30, 8))
    logistic = Router(keys)
    stats = RidgeStats(8)
    for t, k in keys.items():
        stats.add(t, k, t)
    for router in (logistic, Router.ridge(stats)):
        p = router.probabilities(x)
        assert p.shape == (30, 3) and np.allclose(p.sum(1), 1.0) and (p >= 0).all()
        assert (p.argmax(1) == router.route(x).task).all()


@pytest.fixture(scope="module")
def two_tasks(tiny_encoder, sentiment):
    out = []
    for name, labels, seed in (("one", ("positive", "negative"), 1), ("two", ("yes", "no"), 2)):
        spec = TaskSpec(name=name, kind="classification", labels=labels)
        task = data(
            sentiment(48, seed=seed, labels=labels),
            sentiment(16, seed=seed + 9, labels=labels),
            spec,
        )
        run = TrainConfig(steps=10, batch_size=8, lr=1e-2, eval_every=5, patience=0)
        config = module_kind("prefix").config_for(tiny_encoder, length=3)
        out.append(train(tiny_encoder, task, config, run, progress=False).task)
    return out


def test_label_probabilities_pick_what_predict_answers(tiny_encoder, two_tasks) -> None:
    items = [(i % 2, t) for i, t in enumerate(["good film", "awful", "fine", "bad bad", "ok"])]
    answers = predict(tiny_encoder, two_tasks, items)
    probs = predict_probs(tiny_encoder, two_tasks, items)
    for (i, _), a, p in zip(items, answers, probs, strict=True):
        assert set(p) == set(two_tasks[i].spec.labels) and abs(sum(p.values()) - 1) < 1e-5
        assert max(p, key=p.get) == a


class _Fixed(AutoPredictor):
    """The predictor's answering with a router replaced by fixed probabilities (a fake of the
    router only: the prefixes and their answers are real)."""

    def __init__(self, backbone, tasks) -> None:
        self.backbone, self._loaded = backbone, dict(enumerate(tasks))
        self.router = type(
            "R", (), {"kind": routing.LOGISTIC, "tasks": [t.spec.name for t in tasks]}
        )()


def test_answer_unknown_pools_only_where_the_router_is_unsure(tiny_encoder, two_tasks) -> None:
    auto = _Fixed(tiny_encoder, two_tasks)
    texts = ["good film", "awful", "fine"]
    proba = np.array([[0.99, 0.01], [0.6, 0.4], [0.2, 0.8]])
    answers, shown = auto.answer_unknown(texts, proba, batch_size=8)
    alone0 = predict(tiny_encoder, two_tasks, [(0, texts[0])])[0]
    assert answers[0] == alone0 and shown[0] == 0  # one candidate: the top task's answer
    pair = predict_probs(tiny_encoder, two_tasks, [(0, texts[1]), (1, texts[1])])
    want = pooled_label({0: 0.6, 1: 0.4}, {0: pair[0], 1: pair[1]})
    assert (answers[1], shown[1]) == want
    # `known` answers are used where the router has one candidate, never where it pools.
    again, _ = auto.answer_unknown(texts, proba, batch_size=8, known={0: "kept", 1: "ignored"})
    assert again[0] == "kept" and again[1] == answers[1]
