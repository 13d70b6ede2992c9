"""Serving: `evaluate` and `predict` with a named task or an exported prefix, and inputs whose
task nobody names, routed to a task and answered in mixed batches.

`AutoPredictor` is the Python API behind `continual predict --auto`: it fits the router on the
routing keys of every task in the registry on one backbone, routes each input, and answers all
of them with their tasks' prefixes in mixed-task batches (one backbone pass per batch, whatever
tasks the batch holds).

`task_agnostic` is the stream's task-agnostic evaluation at one position: every input of every
task's eval split so far is routed; inputs the router is sure of (one candidate task) and that
go to their own task take that task's own answer (its re-evaluation, identical batching); the
rest are answered as `AutoPredictor` answers them (pooled over the candidate tasks where there
are several), and scored against their own task's targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from continual import checkpoint
from continual.backbones import Backbone, load_backbone
from continual.inference import EvalResult, TrainedTask, evaluate, predict, predict_probs, score
from continual.routing import (
    LOGISTIC,
    ROUTE_RIDGE_FROM,
    Router,
    candidates,
    pooled_label,
    route_features,
    route_method,
)
from continual.scoring import predictions_sha256
from pipelines import ledger, prefix_cache, tables
from pipelines.arrival.book import TaskBook
from pipelines.jobs import backbone_for, stored_backbone, task_prefix_from_registry
from pipelines.router_cache import cache_key, cached_router, keys_by_id, ridge_stats
from pipelines.settings import RegistryArgs
from registry import Registry
from tasks.errors import ConfigError, ContinualError
from tasks.load import DataArgs, load_data
from tasks.sources import load_files
from tasks.spec import Example, TaskSpec

ROUTED, ROUTING = ledger.ROUTED, ledger.ROUTING


@dataclass(frozen=True)
class Answer:
    text: str
    task: str
    confidence: float
    prediction: str


class AutoPredictor:
    """Route and answer texts with the registry's tasks on `backbone` (`tasks`: a subset).

    The router is fitted once per registry generation (`pipelines.router_cache`); `scope`
    names the set of tasks routed among (a stream's) so the ridge router's statistics are
    kept per set. Under the logistic router (fewer than `ROUTE_RIDGE_FROM` tasks) every
    task's prefix is loaded at once, as it always was; under the ridge router a prefix is
    loaded when an input is first routed to it (at T = 1,000, loading them all would cost
    more than the arrival)."""

    def __init__(
        self,
        reg: Registry,
        backbone: Backbone,
        tasks: Sequence[str] | None = None,
        *,
        scope: str | None = None,
    ) -> None:
        def fit() -> Router:
            ids = reg.embedding_ids(route_method(backbone))
            if tasks is not None:
                missing = [t for t in tasks if t not in ids]
                if missing:
                    raise ConfigError(
                        f"no routing keys for task(s) {', '.join(missing)} on backbone "
                        f"{backbone.name} (registered before routing existed, or imported); "
                        "train a new version to add them"
                    )
                ids = {t: ids[t] for t in tasks}
            if not ids:
                raise ConfigError(
                    f"no task in the registry has routing keys on backbone {backbone.name}; "
                    "train a task first"
                )
            if len(ids) >= ROUTE_RIDGE_FROM:
                where = scope or ("all" if tasks is None else cache_key("", "", tasks))
                return Router.ridge(ridge_stats(reg, backbone, ids, where))
            return Router(keys_by_id(reg, {t: i for t, (i, _) in ids.items()}))

        self.reg, self.backbone = reg, backbone
        self.router = cached_router(reg, backbone, tasks, fit)
        self._loaded: dict[int, TrainedTask] = {}
        if self.router.kind == LOGISTIC:
            for i in range(len(self.router.tasks)):
                self.prefix(i)

    def prefix(self, i: int) -> TrainedTask:
        """The prefix of `router.tasks[i]`, loaded (and verified) on first use."""
        if i not in self._loaded:
            self._loaded[i] = prefix_cache.load(self.reg, self.router.tasks[i], self.backbone)
        return self._loaded[i]

    @property
    def loaded(self) -> list[TrainedTask]:
        """The prefixes loaded so far."""
        return [self._loaded[i] for i in sorted(self._loaded)]

    def answer(self, items: Sequence[tuple[int, str]], *, batch_size: int) -> list[str]:
        """Answers for (task index, text) items, in mixed-task batches: over every task's
        prefix under the logistic router (as always), over the tasks the items name under
        the ridge router."""
        return self._run(items, batch_size, predict)

    def _run(self, items: Sequence[tuple[int, str]], batch_size: int, fn: Any) -> list:
        if self.router.kind == LOGISTIC:
            every = [self.prefix(i) for i in range(len(self.router.tasks))]
            return fn(self.backbone, every, items, batch_size=batch_size)
        named = sorted({i for i, _ in items})
        where = {i: n for n, i in enumerate(named)}
        sub = [self.prefix(i) for i in named]
        return fn(self.backbone, sub, [(where[i], t) for i, t in items], batch_size=batch_size)

    def route(
        self, texts: Sequence[str], features: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Task index (into `router.tasks`) and confidence per text; `features`, if given,
        are the texts' routing features computed earlier."""
        if self.router.model is None:  # one task: everything goes to it, no features needed
            n = len(texts)
            return np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.float32)
        if features is None:
            features = route_features(self.backbone, texts)
        routed = self.router.route(features)
        return routed.task, routed.confidence

    def probabilities(self, texts: Sequence[str], features: np.ndarray | None = None) -> np.ndarray:
        """`[n, tasks]` router probabilities (`Router.probabilities`) of `texts`."""
        if self.router.model is None:
            return np.ones((len(texts), 1))
        if features is None:
            features = route_features(self.backbone, texts)
        return self.router.probabilities(features)

    def answer_unknown(
        self,
        texts: Sequence[str],
        proba: np.ndarray,
        *,
        batch_size: int,
        known: dict[int, str] | None = None,
    ) -> tuple[list[str], list[int]]:
        """Answers for texts whose task is not given, and the task shown with each. Where the
        router has one candidate (`routing.candidates`) the text is its top task's, answered
        by that prefix (`known[k]`: that answer, computed already); where it has several, each
        candidate's prefix gives its label probabilities and the answer is the label most
        likely right over them (`routing.pooled_label`)."""
        n = len(texts)
        out: list[str | None] = [None] * n
        shown = [int(proba[k].argmax()) for k in range(n)]
        several = [(k, c) for k in range(n) if len(c := candidates(proba[k])) > 1]
        pairs = [(t, k) for k, c in several for t in c]
        probs = self._run([(t, texts[k]) for t, k in pairs], batch_size, predict_probs)
        got: dict[int, dict[int, dict[str, float]]] = {}
        for (t, k), p in zip(pairs, probs, strict=True):
            if p is not None:  # a generation task has no labels to pool
                got.setdefault(k, {})[t] = p
        for k, labels in got.items():
            if shown[k] in labels:
                weights = {t: float(proba[k][t]) for t in labels}
                out[k], shown[k] = pooled_label(weights, labels)
        known = known or {}
        rest = [k for k in range(n) if out[k] is None and k not in known]
        preds = self.answer([(shown[k], texts[k]) for k in rest], batch_size=batch_size)
        for k, p in zip(rest, preds, strict=True):
            out[k] = p
        return [known[k] if a is None else a for k, a in enumerate(out)], shown

    def predict(self, texts: Sequence[str], *, batch_size: int = 32) -> list[Answer]:
        if not texts:
            raise ConfigError("give at least one TEXT to predict")
        proba = self.probabilities(texts)
        preds, shown = self.answer_unknown(texts, proba, batch_size=batch_size)
        return [
            Answer(t, self.router.tasks[s], float(proba[k][s]), p)
            for k, (t, s, p) in enumerate(zip(texts, shown, preds, strict=True))
        ]


def routing_result(own: int, routed: np.ndarray, names: Sequence[str]) -> EvalResult:
    """Routing accuracy of one task's inputs as an evaluation (predictions: task names)."""
    chosen = tuple(names[int(i)] for i in routed)
    right = float(np.mean(routed == own)) if len(routed) else 0.0
    return EvalResult(
        metric="routing_accuracy",
        score=right,
        n=len(chosen),
        predictions=chosen,
        predictions_sha256=predictions_sha256(chosen),
        extra={},
    )


def task_agnostic(
    backbone: Backbone,
    predictor: AutoPredictor,
    tasks: Sequence[tuple[TaskSpec, Sequence[Example], tuple[str, ...], int]],
    cache: dict[str, np.ndarray] | None = None,
) -> dict[str, tuple[EvalResult, EvalResult]]:
    """Per task: (end-to-end result when the task is inferred, routing result).

    `tasks` holds (spec, eval examples, the task's own predictions on them, eval batch size);
    `cache` keeps each task's routing features between calls (they depend only on the inputs).
    """
    names = predictor.router.tasks
    cache = {} if cache is None else cache
    out: dict[str, tuple[EvalResult, EvalResult]] = {}
    for spec, examples, own_preds, batch_size in tasks:
        own = names.index(spec.name)
        texts = [e.text for e in examples]
        if spec.name not in cache and predictor.router.model is not None:
            cache[spec.name] = route_features(backbone, texts)
        proba = predictor.probabilities(texts, cache.get(spec.name))
        idx = proba.argmax(1)
        known = {k: own_preds[k] for k in range(len(texts)) if int(idx[k]) == own}
        answers, _ = predictor.answer_unknown(texts, proba, batch_size=batch_size, known=known)
        out[spec.name] = (score(spec, answers, examples), routing_result(own, idx, names))
    return out


def record_task_agnostic(
    reg: Registry,
    backbone: Backbone,
    book: TaskBook,
    tasks: list[str],
    position: int,
    answers: dict[str, tuple[str, ...]],
    cache: dict[str, np.ndarray],
    *,
    stream: str = "default",
    only: Sequence[str] | None = None,
) -> None:
    """The stream's task-agnostic evaluation at `position` over `tasks` (the inputs of `only`
    those, when given, routed among all of `tasks`), recorded per task under `prefix/routed`
    and `prefix/routing` (rows already there are kept: a rerun adds none). `answers` are
    tasks' own predictions from this arrival's evaluations (others are redone)."""
    methods = (ROUTED, ROUTING)
    recorded = ledger.scores(reg, stream)
    todo = [
        t
        for t in (tasks if only is None else [t for t in tasks if t in set(only)])
        if any(ledger.find(recorded.get(t, []), m, position) is None for m in methods)
    ]
    if not todo:
        return
    predictor = AutoPredictor(reg, backbone, tasks, scope=f"stream:{stream}")
    entries = []
    for t in todo:
        info, data = book.task(reg, t), book.data(reg, t)
        own = answers.get(t)
        bs = info.config.eval_batch_size
        if own is None:
            loaded = task_prefix_from_registry(reg, t, backbone)
            own = evaluate(backbone, loaded, data.eval, batch_size=bs).predictions
        entries.append((data.spec, data.eval, own, bs))
    for t, pair in task_agnostic(backbone, predictor, entries, cache).items():
        for method, ev in zip(methods, pair):
            ledger.record(reg, t, method, position, ev, stream)  # once: a rerun adds nothing


def summary(answers: Sequence[Answer]) -> dict[str, Any]:
    return {
        "predictions": [
            {"text": a.text, "task": a.task, "confidence": a.confidence, "prediction": a.prediction}
            for a in answers
        ]
    }


# --- the commands ---------------------------------------------------------------------------


def _load_task(
    prefix_dir: Path | None, task: str | None, registry: RegistryArgs, backbone: str | None = None
) -> tuple[Backbone, TrainedTask]:
    if (prefix_dir is None) == (task is None):
        raise ConfigError(
            "give either --prefix DIR (an exported prefix) or --task NAME (a task in the registry)"
        )
    if prefix_dir is not None:
        doc = checkpoint.read_meta(prefix_dir)
        bb = load_backbone(backbone) if backbone else backbone_for(doc["backbone"])
        loaded, _ = checkpoint.load(prefix_dir, backbone_fingerprint=bb.fingerprint)
        return bb, loaded
    assert task is not None
    with registry.open() as reg:
        bb = stored_backbone(reg, task, backbone)
        return bb, task_prefix_from_registry(reg, task, bb)


def run_evaluate(
    *,
    prefix_dir: Path | None,
    task: str | None,
    registry: RegistryArgs,
    data_args: DataArgs,
    batch_size: int,
    backbone_name: str | None = None,
) -> dict[str, Any]:
    backbone, loaded = _load_task(prefix_dir, task, registry, backbone_name)
    spec = loaded.spec
    if data_args.dataset:
        examples = load_data(data_args, spec.name).eval
    elif data_args.eval:
        # The file is read with the task's own fields and label set, so unknown labels are caught.
        examples = load_files(
            name=spec.name,
            train=data_args.eval,
            eval=data_args.eval,
            kind=spec.kind,
            text_field=data_args.text_field or spec.text_field,
            target_field=data_args.target_field or spec.target_field,
            labels=list(spec.labels) or None,
            description=spec.description,
        ).eval
    else:
        raise ConfigError("give the data to evaluate on: --dataset NAME or --eval FILE")
    ev = evaluate(backbone, loaded, examples, batch_size=batch_size)
    return {"task": spec.name, "backbone": backbone.name, **ev.summary()}


def run_predict(
    *,
    prefix_dir: Path | None,
    task: str | None,
    registry: RegistryArgs,
    texts: list[str],
    batch_size: int,
    backbone_name: str | None = None,
) -> dict[str, Any]:
    if not texts:
        raise ConfigError("give at least one TEXT to predict")
    backbone, loaded = _load_task(prefix_dir, task, registry, backbone_name)
    preds = predict(backbone, [loaded], [(0, t) for t in texts], batch_size=batch_size)
    return {
        "task": loaded.spec.name,
        "predictions": [{"text": t, "prediction": p} for t, p in zip(texts, preds)],
        "_human": tables.table(("answer", "text"), zip(preds, texts)),
    }


def registry_backbone(reg: Registry, name: str | None) -> Backbone:
    """`name`'s backbone, or (None) the one the registry's tasks use; several need `--backbone`."""
    if name:
        return load_backbone(name)
    used = reg.backbones_in_use()  # every current prefix's backbone, however many tasks
    if not used:
        raise ConfigError("the registry has no tasks yet; train one first")
    if len(used) > 1:
        raise ConfigError(
            f"the registry's tasks use {len(used)} backbones "
            f"({', '.join(b.name for b in used)}); pass --backbone NAME to pick one"
        )
    try:
        return backbone_for(used[0])
    except ContinualError as e:
        raise ConfigError(
            f"the registry's backbone {used[0].name!r} (from {used[0].source}) cannot be loaded "
            f"here ({e}); pass --backbone NAME_OR_FOLDER"
        ) from None


def run_predict_auto(
    *, registry: RegistryArgs, texts: list[str], backbone: str | None, batch_size: int
) -> dict[str, Any]:
    """`continual predict --auto`: route each text to a task, answer in mixed batches."""
    if not texts:
        raise ConfigError("give at least one TEXT to predict")
    with registry.open() as reg:
        bb = registry_backbone(reg, backbone)
        predictor = AutoPredictor(reg, bb)
    answers = predictor.predict(texts, batch_size=batch_size)
    text = tables.table(
        ("task", "routed", "answer", "text"),
        ((a.task, f"{100 * a.confidence:.1f}%", a.prediction, a.text) for a in answers),
    )
    return {
        "backbone": bb.name,
        "tasks": predictor.router.tasks,
        **summary(answers),
        "_human": text,
    }
