"""The orchestrator: one arrival after another on a frozen backbone, resumable at any point.

An arrival of task X at stream position p (p = the number of earlier arrivals):

1. validate X's data (nothing is written before this succeeds);
2. train X's prefix on the frozen backbone (the scores of its untrained starting points are
   taken first, for forward transfer);
3. register it, with its eval score at position p, in one unit of work;
4. re-evaluate the current prefix of every earlier task on its own eval split, with the batching
   of its own arrival, and 5. record each score at position p;
then each baseline learns X (and catches up on anything it missed), and 6. the report is
written again.

What "done" means, so that a run killed anywhere is redone cleanly by the next one:
- prefix: the `prefix` arrival at p has status done. Registration is the atomic step that makes
  the prefix exist; a rerun that finds X registered with its score at p does not train again.
  Every later write checks first whether its row exists, and an unfinished arrival row is
  finished rather than duplicated.
- a baseline: its arrival at p is done. Its weights and the scores they give are saved together
  (atomically) before anything is recorded, so a rerun either retrains from the previous saved
  state or replays the saved scores into the registry, skipping rows already there.
Training is seeded, so a redone arrival gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from continual.backbones import Backbone, fingerprint, load_backbone
from continual.finetune import fresh_head
from continual.inference import EvalResult, TrainedTask, evaluate
from continual.modules import ModuleConfig, build
from continual.train import TrainConfig, train
from pipelines import ledger
from pipelines.baseline_runner import BaselineRunner, wanted
from pipelines.jobs import load_data, prefix_config_for, register_trained, task_prefix_from_registry
from pipelines.progress import Progress, to_stderr
from pipelines.serve import record_task_agnostic
from pipelines.settings import RegistryArgs, pick_threads
from pipelines.similar import plan_start, start_info
from pipelines.stream import ArrivalPlan, BaselinePlan, StreamSpec, precheck
from pipelines.taskbook import TaskBook, known, registered_at, run_info
from registry import Registry
from tasks.errors import ConfigError, IntegrityError
from tasks.spec import TaskData

PREFIX = ledger.PREFIX


class Orchestrator:
    """Drives arrivals into one workspace's registry. Not thread-safe; one per process.

    `report` is called with the open registry after every arrival (the report refresh).
    """

    def __init__(
        self,
        *,
        registry: RegistryArgs,
        backbone: str,
        progress: bool = True,
        report: Callable[[Registry], dict[str, Any]] | None = None,
        say: Callable[[str], None] = to_stderr,
    ) -> None:
        self.registry = registry
        self.backbone_name = backbone
        self.progress = progress
        self.report = report
        self.log = Progress(say)
        self.say = say
        self.book = TaskBook()
        self._backbone: Backbone | None = None
        self._route_cache: dict[str, Any] = {}

    # ------------------------------------------------------------------------ entry points

    def learn(self, plan: ArrivalPlan, baselines: Sequence[BaselinePlan] = ()) -> dict[str, Any]:
        """`continual learn`: one new task arrives at the end of the workspace's stream."""
        data = self._validate(plan)
        with self._locked(), self.registry.open() as reg:
            tasks = ledger.stream_tasks(reg)
            if plan.name in tasks:
                raise ConfigError(
                    f"task {plan.name} already arrived at position {tasks.index(plan.name)}; "
                    "a new task needs a new --name"
                )
            outcome = self._arrival(reg, plan, data, len(tasks), None, baselines)
            outcome["report"] = self._refresh(reg)
        return outcome

    def run_stream(self, spec: StreamSpec) -> dict[str, Any]:
        """`continual stream run`: every arrival of `spec` in order, skipping those done."""
        precheck(spec)
        outcomes, report = [], None
        with self._locked(), self.registry.open() as reg:
            for position, plan in enumerate(spec.arrivals):
                tasks = ledger.stream_tasks(reg)
                if position < len(tasks) and tasks[position] != plan.name:
                    raise ConfigError(
                        f"{spec.source}: arrival {position} is {plan.name}, but this workspace's "
                        f"stream has {tasks[position]} there; use another --home for this stream"
                    )
                if position > len(tasks):
                    raise IntegrityError(f"stream position {len(tasks)} is missing")
                if position < len(tasks) and self._all_done(reg, position, spec.baselines):
                    self.say(f"[{position + 1}/{len(spec.arrivals)}] {plan.name} · done earlier")
                    outcomes.append({"task": plan.name, "position": position, "status": "skipped"})
                    continue
                data = None if position < len(tasks) else self._validate(plan)
                outcome = self._arrival(
                    reg, plan, data, position, len(spec.arrivals), spec.baselines
                )
                outcomes.append(outcome)
                report = self._refresh(reg)
            if report is None:
                report = self._refresh(reg)
        return {"stream": spec.source, "arrivals": outcomes, "report": report}

    # ------------------------------------------------------------------------- an arrival

    def _arrival(
        self,
        reg: Registry,
        plan: ArrivalPlan,
        data: TaskData | None,
        position: int,
        total: int | None,
        baselines: Sequence[BaselinePlan],
    ) -> dict[str, Any]:
        tag = f"[{position + 1}/{total or position + 1}] {plan.name}"
        threads = pick_threads(busy=self._backbone is not None)
        if threads is not None:
            self.say(f"{tag} · {threads} torch thread(s) for this arrival")
        backbone = self._load_backbone(reg)
        started = time.perf_counter()
        outcome: dict[str, Any] = {"task": plan.name, "position": position, "status": "done"}
        tasks = ledger.stream_tasks(reg)
        if position == len(tasks):
            assert data is not None
            outcome[PREFIX] = self._prefix_arrival(reg, plan, data, position, tag)
        runner = BaselineRunner(
            home=self.registry.home,
            backbone=backbone,
            book=self.book,
            progress=self.log,
            bars=self.progress,
        )
        for method, options in wanted(reg, self.registry.home, baselines).items():
            outcome[method] = runner.catch_up(reg, method, options, tag)
        self._check_backbone(backbone, position, plan.name)
        outcome["seconds"] = round(time.perf_counter() - started, 2)
        return outcome

    def _prefix_arrival(
        self, reg: Registry, plan: ArrivalPlan, data: TaskData, position: int, tag: str
    ) -> dict[str, Any]:
        backbone, config = self.backbone, plan.config
        pconfig = prefix_config_for(backbone, plan.prefix_length, plan.positions)
        pconfig = pconfig.with_(init=plan.init)
        held = ledger.open_arrival(reg, PREFIX, position)
        if held is not None and held.task != plan.name:
            raise ConfigError(
                f"position {position} holds an unfinished arrival of {held.task}, not "
                f"{plan.name}; finish it first (`continual learn` it again, or rerun its stream)"
            )
        registered = registered_at(reg, plan.name, position)
        starts: tuple[EvalResult, EvalResult] | None = None
        summary: dict[str, Any] = {}
        answers: dict[str, tuple[str, ...]] = {}
        if registered is None:
            if known(reg, plan.name):
                raise ConfigError(
                    f"task {plan.name} is already in the registry (trained outside the stream); "
                    "give the arriving task another name"
                )
            with self.log.step(tag, f"prefix · embed, init ({plan.init})"):
                planned, vectors = plan_start(reg, backbone, data, pconfig)
            start = planned.tensors
            with self.log.step(tag, f"prefix · starting points ({planned.strategy})"):
                starts = _prefix_starts(backbone, data, pconfig, config, start)
            with self.log.step(tag, f"prefix · train ({config.steps} steps)"):
                result = train(backbone, data, pconfig, config, init=start, progress=self.progress)
                ev = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)
            with self.log.step(tag, "prefix · register"):
                record = register_trained(
                    reg,
                    backbone=backbone,
                    data=data,
                    prefix_config=pconfig,
                    config=config,
                    result=result,
                    evaluation=ev,
                    lineage=planned.lineage(),
                    new_version=False,
                    position=position,
                    run_extra={
                        "stream": run_info(plan, data, position, backbone),
                        "init": start_info(planned),
                    },
                    embeddings=vectors,
                )
            answers[plan.name] = ev.predictions
            summary = {
                "score": ev.score,
                "metric": ev.metric,
                "steps": result.steps,
                "best_step": result.best_step,
                "train_seconds": round(result.seconds, 2),
                "prefix_id": record.id,
            }
        else:
            self.say(f"{tag} · prefix · registered earlier (prefix id {registered.id})")
            summary = {"score": registered.value, "metric": registered.metric, "resumed": True}
        arrival = held or reg.start_arrival(position=position, task=plan.name, method=PREFIX)
        self._record_starts(reg, PREFIX, plan.name, position, starts, data, pconfig, config)
        earlier = ledger.stream_tasks(reg)[:position]
        with self.log.step(tag, f"prefix · re-evaluate {len(earlier)} earlier task(s)"):
            for task in earlier:
                ev = self._reevaluate(reg, task, position)
                if ev is not None:
                    answers[task] = ev.predictions
        with self.log.step(tag, "prefix · task-agnostic (routed) evaluation"):
            self._task_agnostic(reg, [*earlier, plan.name], position, answers)
        reg.finish_arrival(arrival.id, "done")
        return summary

    def _task_agnostic(
        self, reg: Registry, tasks: list[str], position: int, answers: dict[str, tuple[str, ...]]
    ) -> None:
        try:
            record_task_agnostic(
                reg, self.backbone, self.book, tasks, position, answers, self._route_cache
            )
        except ConfigError as e:  # e.g. tasks registered before routing keys existed
            self.say(f"task-agnostic evaluation skipped at position {position}: {e}")

    def _reevaluate(self, reg: Registry, task: str, position: int) -> EvalResult | None:
        if ledger.find(reg.history(task), PREFIX, position) is not None:
            return None
        info = self.book.task(reg, task)
        loaded = task_prefix_from_registry(reg, task, self.backbone)
        examples = self.book.data(reg, task).eval
        # The batching of its own arrival (batch size, order, padding): the same predictions.
        ev = evaluate(self.backbone, loaded, examples, batch_size=info.config.eval_batch_size)
        ledger.record(reg, task, PREFIX, position, ev)
        if ev.predictions_sha256 != info.predictions_sha256:
            self.say(
                f"!!! {task}: predictions at position {position} differ from those at its "
                f"arrival (sha256 {ev.predictions_sha256[:12]}… vs "
                f"{str(info.predictions_sha256)[:12]}…); the report flags it"
            )
        return ev

    def _record_starts(
        self,
        reg: Registry,
        method: str,
        task: str,
        position: int,
        starts: tuple[EvalResult, EvalResult] | None,
        data: TaskData,
        pconfig: ModuleConfig,
        config: TrainConfig,
    ) -> None:
        history = reg.history(task)
        missing = [
            w
            for w in ledger.UNTRAINED
            if ledger.find(history, ledger.untrained_method(method, w), position) is None
        ]
        if not missing:
            return
        if starts is None:  # redone after a kill: the starting points are seeded, so recompute
            planned, _ = plan_start(reg, self.backbone, data, pconfig)
            starts = _prefix_starts(self.backbone, data, pconfig, config, planned.tensors)
        for which, ev in zip(ledger.UNTRAINED, starts):
            if which in missing:
                ledger.record(reg, task, ledger.untrained_method(method, which), position, ev)

    def _all_done(self, reg: Registry, position: int, baselines: Sequence[BaselinePlan]) -> bool:
        methods = {PREFIX, *wanted(reg, self.registry.home, baselines)}
        return all(len(ledger.done_arrivals(reg, m)) > position for m in methods)

    def _validate(self, plan: ArrivalPlan) -> TaskData:
        self.say(f"{plan.name} · validate data")
        data = load_data(plan.data, plan.name)
        self.book.remember(data)
        return data

    # --------------------------------------------------------------------------- plumbing

    @property
    def backbone(self) -> Backbone:
        assert self._backbone is not None, "the backbone is loaded by the first arrival"
        return self._backbone

    def _load_backbone(self, reg: Registry) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self.backbone_name)
        tasks = ledger.stream_tasks(reg)
        if tasks:
            used = reg.prefix(self.book.task(reg, tasks[0]).prefix_id).backbone_fingerprint
            if used != self._backbone.fingerprint:
                raise ConfigError(
                    f"this workspace's stream runs on another backbone (fingerprint "
                    f"{used[:12]}…) than {self.backbone_name}; use its backbone or another --home"
                )
        return self._backbone

    def _check_backbone(self, backbone: Backbone, position: int, task: str) -> None:
        """Fingerprint the frozen backbone again and keep the evidence; a change is a bug."""
        now = fingerprint(backbone.model)
        folder = self.registry.home / "stream" / "evidence"
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "position": position,
            "task": task,
            "backbone": backbone.name,
            "fingerprint_at_load": backbone.fingerprint,
            "fingerprint_after_arrival": now,
            "equal": now == backbone.fingerprint,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = folder / f".{position:04d}.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, folder / f"{position:04d}.json")
        if now != backbone.fingerprint:
            raise IntegrityError(
                f"the frozen backbone {backbone.name} changed during arrival {position} ({task}): "
                f"fingerprint {now[:12]}… vs {backbone.fingerprint[:12]}… at load; this is a bug"
            )

    def _refresh(self, reg: Registry) -> dict[str, Any] | None:
        if self.report is None:
            return None
        with self.log.step("report", "refresh"):
            return self.report(reg)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One arrival at a time per workspace, across processes."""
        home = self.registry.home
        home.mkdir(parents=True, exist_ok=True)
        with open(home / "stream.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"waiting for another arrival in {home} to finish…")
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


# --- small helpers ------------------------------------------------------------------------------


def _prefix_starts(
    backbone: Backbone,
    data: TaskData,
    pconfig: ModuleConfig,
    config: TrainConfig,
    start: Any,
) -> tuple[EvalResult, EvalResult]:
    """Scores of the task's untrained prefix (where training starts) and of a random one, with
    the head training would start from. A random init is both: one evaluation, two records."""
    head = fresh_head(backbone, data.spec, config.seed)

    def score(tensors) -> EvalResult:
        task = TrainedTask(
            spec=data.spec, config=pconfig, tensors=tensors, head=head, limits=config.limits
        )
        return evaluate(backbone, task, data.eval, batch_size=config.eval_batch_size)

    random = score(build(pconfig.with_(init="random"), seed=config.seed).eject())
    if start is None:
        return random, random
    return score(build(pconfig, start=start, seed=config.seed).eject()), random
