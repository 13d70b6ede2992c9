"""The server's predictions: one backbone, loaded once, and the current prefix of every task.

`Answerer.answer(items)` answers (task or None, text) items in one call: items without a task
are routed (one routing pass for all of them) and answered as `continual predict --auto`
answers them (`AutoPredictor.answer_unknown`: pooled over the candidate tasks where the router
is unsure), items that name a task in mixed-task batches by `continual.inference.predict`, the
same function `continual predict` uses. It runs
on one thread only (the batcher's), so the backbone is never used by two passes at once, and
never by a training run: in-process workers load their own copy (training switches dropout on).

Loaded prefixes and the router are kept per registry generation (`Registry.generation()`,
changed by any new task or version), read at most every `REFRESH_S`: a task that lands is
answered by the next request that names it (its prefix is loaded then), a new version or the
router's new task within `REFRESH_S`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from continual.backbones import Backbone, load_backbone
from continual.inference import TrainedTask, predict
from pipelines.jobs import task_prefix_from_registry
from pipelines.serve import AutoPredictor, registry_backbone
from registry import Registry
from tasks.errors import ConfigError

REFRESH_S = 0.5  # one generation query per half second at most, not one per micro-batch


@dataclass(frozen=True)
class Answer:
    text: str
    task: str
    prediction: str
    confidence: float | None  # the router's, for a routed input; None when the task was given

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "task": self.task,
            "prediction": self.prediction,
            "routed": self.confidence is not None,
            "confidence": self.confidence,
        }


class Answerer:
    """Answers for one registry on one backbone (`name`, else the registry's own)."""

    def __init__(self, reg: Registry, name: str | None = None) -> None:
        self.reg, self.name = reg, name
        self.backbone: Backbone | None = None
        self._generation: str | None = None
        self._checked = -float("inf")
        self._prefixes: dict[str, TrainedTask] = {}
        self._auto: AutoPredictor | None = None

    def load(self) -> Backbone | None:
        """Load the backbone now if it is known (named, or the registry's tasks use one)."""
        if self.backbone is None:
            if self.name:
                self.backbone = load_backbone(self.name)
            elif self.reg.backbones_in_use():
                self.backbone = registry_backbone(self.reg, None)
        return self.backbone

    def prepared(self, task: str | None) -> bool:
        """Whether `task`'s prefix (None: the router) is loaded already (a dict lookup)."""
        return self._auto is not None if task is None else task in self._prefixes

    def prepare(self, task: str | None) -> None:
        """Load `task`'s prefix (None: fit the router), raising its error here, for one
        request, rather than inside a micro-batch where it would fail every request."""
        backbone = self._current()
        if task is None:
            self._router(backbone)
        else:
            self._prefix(backbone, task)

    def answer(self, items: Sequence[tuple[str | None, str]]) -> list[Answer]:
        """Answers for (task, text) items in order; a None task is routed."""
        backbone = self._current()
        tasks: list[str | None] = [t for t, _ in items]
        confidence: list[float | None] = [None] * len(items)
        preds: list[str | None] = [None] * len(items)
        routed = [k for k, (t, _) in enumerate(items) if t is None]
        if routed:  # answered as `predict --auto` answers (pooled where the router is unsure)
            auto = self._router(backbone)
            texts = [items[k][1] for k in routed]
            proba = auto.probabilities(texts)
            found, shown = auto.answer_unknown(texts, proba, batch_size=max(1, len(texts)))
            for n, (k, a, s) in enumerate(zip(routed, found, shown, strict=True)):
                tasks[k], confidence[k], preds[k] = auto.router.tasks[s], float(proba[n][s]), a
        named = [k for k, (t, _) in enumerate(items) if t is not None]
        names = sorted({str(items[k][0]) for k in named})
        prefixes = [self._prefix(backbone, t) for t in names]
        where = {t: i for i, t in enumerate(names)}
        work = [(where[str(items[k][0])], items[k][1]) for k in named]
        for k, p in zip(named, predict(backbone, prefixes, work, batch_size=max(1, len(work)))):
            preds[k] = p
        return [
            Answer(text=text, task=str(t), prediction=str(p), confidence=c)
            for (_, text), t, p, c in zip(items, tasks, preds, confidence, strict=True)
        ]

    def _current(self) -> Backbone:
        """The backbone, with prefixes and router of the registry's current generation."""
        backbone = self.load()
        if backbone is None:
            raise ConfigError("the registry has no tasks yet; queue an arrival first")
        self._refresh()
        return backbone

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < REFRESH_S:
            return
        self._checked = now
        generation = self.reg.generation()
        if generation != self._generation:
            self._generation, self._prefixes, self._auto = generation, {}, None

    def _prefix(self, backbone: Backbone, task: str) -> TrainedTask:
        if task not in self._prefixes:
            self._prefixes[task] = task_prefix_from_registry(self.reg, task, backbone)
        return self._prefixes[task]

    def _router(self, backbone: Backbone) -> AutoPredictor:
        if self._auto is None:
            self._auto = AutoPredictor(self.reg, backbone)
            for t in self._auto.loaded:
                self._prefixes.setdefault(t.spec.name, t)
        return self._auto
