"""Routing: which task an input belongs to, when nobody says.

Each task keeps routing keys from its arrival: the frozen backbone's features for a seeded
sample of its training inputs (`ROUTE_SAMPLE` rows). A feature is the mean-pooled hidden
state of up to `ROUTE_LAYERS` evenly spaced layers, each unit-normed, concatenated. The router
is a logistic regression over those keys (learned keys: one weight vector per task), refit
whenever the set of tasks changes, so adding a task never needs the old tasks' data.

Measured on the demo stream's five tasks (minilm, 200 held-out inputs per task, 1,000 in all,
`python -m bench.routing`): nearest centroid of the last layer's features routes 88.4% right,
nearest centroid of the six-layer features 93.3%, and this logistic regression 96.2% (tweets
and SMS are the pairs it confuses). In an offline sweep on the same tasks it reached 92.7% with
64 keys per task, 96.5% with 256 and 96.8% with 400; k-means prototypes (4-16 per task) 94-96%.

A logistic regression over T tasks costs more than T times as much to fit as over one (every
fit sees every task's keys, with one weight vector per task), and it is refit at every arrival:
8 s at T = 100 on 2 cores, hours at T = 1,000. From `ROUTE_RIDGE_FROM` tasks on, the router is
closed-form instead: a ridge regression from keys (with a constant 1) onto one-hot task targets,
W = (Σ x xᵀ + λ I)⁻¹ [Σ_t x ...], whose statistics (`RidgeStats`) are sums over tasks: adding a
task adds its keys' Gram matrix and key sum, so a new arrival costs one [d, d] update and one
solve, not a refit over every task's keys (the closed-form heads of RanPAC and SimpleCIL work
the same way). Its score for a task is a least-squares estimate of the task's probability; the
confidence shown is the top score clipped to [0, 1]. Against the logistic regression (`python -m
bench.routing --routers`): 96.6% against 96.1% on the demo's five catalog tasks (where λ = 10 was
chosen among 0.1, 1 and 10), and 96.4% against 96.1% on those five with seven held-out tasks
from sources the catalog does not use (12 tasks, 2,389 inputs), fitted 4× faster at 12 tasks;
on the long stream's 17 catalog tasks the logistic regression is ahead, 88.0% against 87.0%
(`python -m bench.routing_ceiling`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from continual.backbones import Backbone
from continual.similarity import (
    embedding_method,
    layer_features,
    sample_texts,
    spaced_layers,
    task_embedding,
)
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData

ROUTE_SAMPLE = 256
ROUTE_LAYERS = 6
ROUTE_MAX_LENGTH = 64
ROUTE_C = 1.0
#: From this many tasks on, the closed-form ridge router (below: the logistic regression).
ROUTE_RIDGE_FROM = 21
ROUTE_RIDGE_LAMBDA = 10.0  # chosen on the catalog five (bench.routing --routers)
LOGISTIC, RIDGE = "logistic", "ridge"
#: An input's candidate tasks: the router's top task, and the next ones (at most `POOL_MAX` in
#: all) it gives at least `POOL_MIN`. Where there are several, the answer is the label most
#: likely right over them (`pooled_label`). Both bound the cost (one extra row per candidate);
#: neither was tuned: the rule itself has no parameter.
POOL_MIN = 0.05
POOL_MAX = 3


def route_method(backbone: Backbone) -> str:
    """The registry method name of routing keys on `backbone` (keys are per backbone)."""
    return f"route:{backbone.fingerprint[:16]}"


def route_layers(backbone: Backbone) -> tuple[int, ...]:
    """Up to `ROUTE_LAYERS` evenly spaced hidden-state indices, the last layer included."""
    return spaced_layers(backbone, ROUTE_LAYERS)


def route_features(backbone: Backbone, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """`[n, layers * hidden]` routing features of `texts` (no prefix: the frozen backbone)."""
    return layer_features(backbone, texts, batch_size=batch_size, max_length=ROUTE_MAX_LENGTH)


def task_keys(backbone: Backbone, examples: Sequence[Example], *, seed: int = 0) -> np.ndarray:
    """A task's routing keys: the features of a seeded sample of its inputs."""
    if not examples:
        raise ConfigError("no examples to take routing keys from")
    return route_features(backbone, sample_texts(examples, ROUTE_SAMPLE, seed))


@dataclass(frozen=True)
class Routed:
    """Where each input went: task index (into `Router.tasks`) and the router's confidence."""

    task: np.ndarray
    confidence: np.ndarray


class Router:
    """A logistic regression from routing features to tasks, fit on the tasks' keys (or, made
    by `Router.ridge`, the closed-form ridge router; `kind` says which)."""

    kind = LOGISTIC

    def __init__(self, keys: dict[str, np.ndarray], *, seed: int = 0) -> None:
        if not keys:
            raise ConfigError("no tasks with routing keys to route between")
        self.tasks = sorted(keys)
        dims = {keys[t].shape[-1] for t in self.tasks}
        if len(dims) != 1:
            raise ConfigError(f"routing keys differ in width {sorted(dims)}: mixed backbones")
        self.dim = dims.pop()
        self.model: Any = None
        if len(self.tasks) > 1:
            from sklearn.linear_model import LogisticRegression

            x = np.concatenate([keys[t] for t in self.tasks])
            y = np.concatenate([np.full(len(keys[t]), i) for i, t in enumerate(self.tasks)])
            self.model = LogisticRegression(C=ROUTE_C, max_iter=3000, random_state=seed)
            self.model.fit(x, y)

    @classmethod
    def ridge(cls, stats: RidgeStats, *, lam: float = ROUTE_RIDGE_LAMBDA) -> Router:
        """The closed-form router of `stats`' tasks: W = (G + λI)⁻¹ S, one solve."""
        if not stats.sums:
            raise ConfigError("no tasks with routing keys to route between")
        router = cls.__new__(cls)
        router.kind, router.tasks, router.dim, router.model = (
            RIDGE,
            sorted(stats.sums),
            stats.dim,
            None,
        )
        if len(router.tasks) > 1:
            from scipy.linalg import solve

            s = np.stack([stats.sums[t] for t in router.tasks], axis=1)
            a = stats.gram + lam * np.eye(len(stats.gram))
            router.model = RidgeModel(solve(a, s, assume_a="pos"))
        return router

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild this router exactly (`Router.restore`): no pickle needed."""
        out = {"tasks": np.array(self.tasks, dtype=str), "dim": np.array(self.dim)}
        if self.kind == RIDGE:
            out["kind"] = np.array(RIDGE)
            if self.model is not None:
                out["weights"] = self.model.weights
        elif self.model is not None:
            out |= {
                "coef": self.model.coef_,
                "intercept": self.model.intercept_,
                "classes": self.model.classes_,
            }
        return out

    @classmethod
    def restore(cls, state: dict[str, np.ndarray]) -> Router:
        """The router `state()` came from: the same tasks and the same fitted weights, so it
        routes bit for bit as the fitted one (sklearn's own `predict_proba` runs on them)."""
        router = cls.__new__(cls)
        router.tasks = [str(t) for t in state["tasks"]]
        router.dim = int(state["dim"])
        router.model = None
        router.kind = str(state["kind"]) if "kind" in state else LOGISTIC
        if router.kind == RIDGE and "weights" in state:
            weights = np.asarray(state["weights"])
            if weights.shape != (router.dim + 1, len(router.tasks)) or len(router.tasks) < 2:
                raise ValueError("router state does not fit its tasks")
            router.model = RidgeModel(weights)
        elif "coef" in state:
            from sklearn.linear_model import LogisticRegression

            coef = np.asarray(state["coef"])
            if coef.shape[-1] != router.dim or len(router.tasks) < 2:
                raise ValueError("router state does not fit its tasks")
            model = LogisticRegression(C=ROUTE_C, max_iter=3000)
            model.coef_, model.intercept_ = coef, np.asarray(state["intercept"])
            model.classes_ = np.asarray(state["classes"])
            model.n_features_in_ = router.dim
            router.model = model
        return router

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """`[n, tasks]`: each input's probability of each task (columns in `tasks` order). The
        ridge router's scores are least-squares estimates: clipped at 0 and renormalised."""
        self._check(features)
        n = len(features)
        if self.model is None:
            return np.ones((n, 1))
        if self.kind == RIDGE:
            scores = np.clip(self.model.scores(features), 0, None)
            top = np.zeros_like(scores)
            top[np.arange(n), scores.argmax(1)] = 1.0
            sums = scores.sum(1, keepdims=True)
            return np.where(sums > 0, scores / np.where(sums > 0, sums, 1), top)
        proba = self.model.predict_proba(features)
        out = np.zeros((n, len(self.tasks)))
        out[:, self.model.classes_.astype(np.int64)] = proba
        return out

    def _check(self, features: np.ndarray) -> None:
        if features.shape[-1] != self.dim:
            raise ConfigError(
                f"routing features are {features.shape[-1]}-wide, keys {self.dim}: another backbone"
            )

    def route(self, features: np.ndarray) -> Routed:
        self._check(features)
        n = len(features)
        if self.model is None:
            return Routed(np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.float32))
        if self.kind == RIDGE:
            scores = self.model.scores(features)
            top = scores.max(1)
            return Routed(scores.argmax(1).astype(np.int64), np.clip(top, 0, 1).astype(np.float32))
        proba = self.model.predict_proba(features)
        idx = self.model.classes_[proba.argmax(1)].astype(np.int64)
        return Routed(idx, proba.max(1).astype(np.float32))


def candidates(p: np.ndarray) -> list[int]:
    """An input's candidate tasks from its row of router probabilities: the top task first
    (ties: the lowest index, as `route` picks), then the next ones the router gives at least
    `POOL_MIN`, at most `POOL_MAX` in all."""
    order = np.argsort(-p, kind="stable")[:POOL_MAX]
    return [int(order[0])] + [int(t) for t in order[1:] if p[t] >= POOL_MIN]


def pooled_label(
    weights: dict[int, float], label_probs: dict[int, dict[str, float]]
) -> tuple[str, int]:
    """The answer most likely right when the input's task is one of the candidates: the label
    y maximising sum over candidates t of p(t | x) * p_t(y | x), where `weights` are the router's
    p(t | x) and `label_probs[t]` task t's own probabilities over its labels. Tasks that share
    labels (six sentiment tasks) pool their evidence; tasks with other labels compete with it.
    Returns the label and the candidate that gives it the most weight (the task to show)."""
    total: dict[str, float] = {}
    for t, w in weights.items():
        for y, q in label_probs[t].items():
            total[y] = total.get(y, 0.0) + w * q
    best = max(sorted(total), key=lambda y: total[y])
    owner = max(
        (t for t in weights if best in label_probs[t]),
        key=lambda t: (weights[t] * label_probs[t][best], -t),
    )
    return best, owner


class RidgeModel:
    """The fitted ridge router: `[dim + 1, tasks]` weights over (features, 1)."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def scores(self, features: np.ndarray) -> np.ndarray:
        return augment(features) @ self.weights


def augment(x: np.ndarray) -> np.ndarray:
    """Rows of `x` in float64 with a constant 1 appended (the ridge router's intercept)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.hstack([x, np.ones((len(x), 1))])


class RidgeStats:
    """What the ridge router is solved from: G = Σ x̃ x̃ᵀ over every key of every task
    (x̃: the key with a 1 appended, in float64), and per task Σ x̃ and which stored keys
    (`ids`: a stamp of the registry row) it came from. Adding or removing a task is one [d, d] update;
    sums taken in another order differ only in the last bits."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.gram = np.zeros((dim + 1, dim + 1))
        self.sums: dict[str, np.ndarray] = {}
        self.ids: dict[str, str] = {}

    def add(self, task: str, keys: np.ndarray, key_id: str) -> None:
        if task in self.sums:
            raise ValueError(f"{task} is in the router statistics already")
        x = self._rows(keys)
        self.gram += x.T @ x
        self.sums[task], self.ids[task] = x.sum(0), key_id

    def remove(self, task: str, keys: np.ndarray) -> None:
        x = self._rows(keys)
        self.gram -= x.T @ x
        del self.sums[task], self.ids[task]

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        if keys.shape[-1] != self.dim:
            raise ConfigError(
                f"routing keys are {keys.shape[-1]}-wide, not {self.dim}: another backbone"
            )
        return augment(keys)

    def state(self) -> dict[str, np.ndarray]:
        tasks = sorted(self.sums)
        return {
            "dim": np.array(self.dim),
            "gram": self.gram,
            "tasks": np.array(tasks, dtype=str),
            "sums": np.stack([self.sums[t] for t in tasks])
            if tasks
            else np.zeros((0, self.dim + 1)),
            "ids": np.array([self.ids[t] for t in tasks], dtype=str),
        }

    @classmethod
    def restore(cls, state: dict[str, np.ndarray]) -> RidgeStats:
        stats = cls(int(state["dim"]))
        tasks = [str(t) for t in state["tasks"]]
        gram, sums = np.asarray(state["gram"]), np.asarray(state["sums"])
        if gram.shape != stats.gram.shape or sums.shape != (len(tasks), stats.dim + 1):
            raise ValueError("router statistics do not fit their width")
        stats.gram = gram.copy()
        stats.sums = {t: sums[k].copy() for k, t in enumerate(tasks)}
        stats.ids = {t: str(i) for t, i in zip(tasks, state["ids"])}
        return stats


def arrival_embeddings(backbone: Backbone, data: TaskData) -> dict[str, np.ndarray]:
    """What a task's registration stores beside its prefix: its task embedding and its
    routing keys, both from the frozen backbone over its training inputs."""
    emb = task_embedding(backbone, data.spec, data.train, seed=data.spec.seed)
    keys = task_keys(backbone, data.train, seed=data.spec.seed)
    return {embedding_method(backbone): emb, route_method(backbone): keys}
