"""The steps of an arrival, shared by `train`, `learn`, `stream run` and every worker.

An arrival of task X at position p of stream S (p = the number of S's earlier arrivals):

1. validate X's data and store it in the registry (`store_data`; done when the job is queued,
   so a refused task writes nothing and a worker never reads the user's files);
2. plan the start (random, or from similar earlier prefixes) and score the untrained start;
3. train X's prefix on the frozen backbone and evaluate it on its eval split;
4. register it with its score at (S, p) and its arrival row, in one unit of work;
5. re-score earlier tasks of S at (S, p): all, or a sample with the rest proven (`reeval`);
6. the task-agnostic (routed) evaluation at (S, p);
7. finish the arrival; then each baseline of S catches up on X.

`train` runs steps 1-4 without a stream. Every write a redone step may repeat tolerates the row
a previous attempt left (unique constraints), and every step first looks for its result, so a
job taken over from a killed worker ends exactly as an uninterrupted one: training is seeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from continual.backbones import Backbone
from continual.finetune import fresh_head
from continual.inference import EvalResult, TrainedTask, evaluate
from continual.modules import ModuleConfig, build
from continual.train import TrainConfig, train
from pipelines import ledger
from pipelines.arrival import reeval
from pipelines.arrival.book import TaskBook
from pipelines.arrival.plan import ArrivalJob, ArrivalPlan, module_config
from pipelines.arrival.trained import Trained
from pipelines.jobs import register_trained, task_prefix_from_registry
from pipelines.progress import Progress
from pipelines.serve import record_task_agnostic
from pipelines.similar import plan_start, start_info
from registry import DatasetRecord, EvaluationRecord, Registry
from tasks.errors import ConfigError, IntegrityError
from tasks.load import DataArgs, load_data
from tasks.spec import TaskData


def store_data(reg: Registry, args: DataArgs, name: str | None) -> tuple[TaskData, DatasetRecord]:
    """Step 1: load and validate a task's data, and store it in the registry's data store."""
    data = load_data(args, name)
    return data, reg.data.put(data)


def train_task(
    reg: Registry,
    backbone: Backbone,
    data: TaskData,
    plan: ArrivalPlan,
    *,
    log: Progress,
    tag: str,
    bars: bool,
    with_starts: bool,
    observe: Callable[[int, int, float], None] | None = None,
    worker: str = "",
) -> Trained:
    """Steps 2-3: plan the start, score it (for forward transfer, in a stream), train, evaluate."""
    if plan.tune is not None:
        kw = {"log": log, "tag": tag, "bars": bars, "starts": with_starts, "worker": worker}
        return _tuned(reg, backbone, data, plan, **kw)
    config = plan.config
    pconfig = module_config(backbone, plan)
    with log.step(tag, f"prefix · embed, init ({plan.init})"):
        planned, vectors = plan_start(reg, backbone, data, pconfig)
    starts = None
    if with_starts:
        with log.step(tag, f"prefix · starting points ({planned.strategy})"):
            starts = prefix_starts(backbone, data, pconfig, config, planned.tensors)
    with log.step(tag, f"prefix · train ({config.steps} steps)"):
        result = train(
            backbone, data, pconfig, config, init=planned.tensors, progress=bars, observe=observe
        )
        ev = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)
    return Trained(
        result=result,
        evaluation=ev,
        pconfig=pconfig,
        lineage=planned.lineage(),
        run_extra={"init": start_info(planned)},
        embeddings=vectors,
        starts=starts,
    )


def _tuned(reg: Registry, backbone: Backbone, data: TaskData, plan: ArrivalPlan, **kw: Any):
    from pipelines.arrival.tuned import Search

    log, tag = kw["log"], kw["tag"]
    with log.step(tag, f"prefix · search ({plan.tune.trials} trials)"):
        search = Search(
            reg, backbone, data, plan, say=log.say, bars=kw["bars"], worker=kw["worker"]
        )
        t = search.run(prefix_starts if kw["starts"] else None)
    return Trained(
        result=t["result"], evaluation=t["evaluation"], pconfig=t["pconfig"],
        lineage=t["planned"].lineage(),
        run_extra={"init": start_info(t["planned"]), "tune": t["summary"]},
        embeddings=t["embeddings"], starts=t["starts"], config=t["config"],
    )  # fmt: skip


def prefix_starts(
    backbone: Backbone, data: TaskData, pconfig: ModuleConfig, config: TrainConfig, start: Any
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


class StreamArrival:
    """One arrival job of one stream, run against an open registry with a loaded backbone.

    `alive()` is asked between steps: False means the job's lease was lost (another worker
    has taken it over), and the arrival stops where it is; what it wrote stands, and the other
    worker's redo tolerates it.
    """

    def __init__(
        self,
        *,
        reg: Registry,
        backbone: Backbone,
        job: ArrivalJob,
        stream: str,
        book: TaskBook,
        log: Progress,
        bars: bool,
        runtime: dict[str, Any],
        route_cache: dict[str, Any],
        alive: Callable[[], bool] = lambda: True,
        observe: Callable[[int, int, float], None] | None = None,
        fan_out: Callable[[list[str], int], dict[str, tuple[str, ...]]] | None = None,
    ) -> None:
        self.reg, self.backbone, self.job, self.stream = reg, backbone, job, stream
        self.fan_out = fan_out  # re-scores tasks elsewhere (Ray), recording their scores
        self.book, self.log, self.bars, self.runtime = book, log, bars, runtime
        self.route_cache, self.alive, self.observe = route_cache, alive, observe
        self.name = job.plan.name

    def position(self) -> int:
        """The task's position: where an earlier attempt put it, else the stream's end."""
        reg, s = self.reg, self.stream
        mine = ledger.arrival_of(reg, ledger.PREFIX, self.name, s)
        if mine is not None:
            return mine.position
        rows = reg.streams.arrivals(ledger.PREFIX, s)
        for p, a in enumerate(rows):
            if a.position != p or a.status != "done":
                raise IntegrityError(
                    f"stream {s}: position {p} holds an unfinished arrival of {a.task}; "
                    f"retry its job (`continual jobs --stream {s}`)"
                )
        return len(rows)

    def run(self, tag: str) -> dict[str, Any]:
        """Steps 2-6 of the prefix, then finish the arrival; returns the prefix's summary."""
        position = self.position()
        self.tag = tag
        answers: dict[str, tuple[str, ...]] = {}
        if self.job.adopt:
            summary = self._adopt(position, answers)
        else:
            summary = self._register(position, answers)
        self._check()
        arrival = self.reg.streams.start_arrival(
            stream=self.stream, position=position, task=self.name, method=ledger.PREFIX
        )
        earlier = ledger.stream_tasks(self.reg, self.stream)[:position]
        measure, proof, plan = list(earlier), None, self.job.plan
        if reeval.mode_for(plan.reeval, position) != "full":
            with self.log.step(tag, f"prefix · verify the backbone and {len(earlier)} modules"):
                measure, proof = reeval.arrange(
                    self.reg, self.backbone, self.stream, earlier,
                    requested=plan.reeval, k=plan.audit_k, seed=plan.config.seed,
                )  # fmt: skip
        what = f"{len(measure)} of {len(earlier)}" if proof else str(len(measure))
        with self.log.step(tag, f"prefix · re-evaluate {what} earlier task(s)"):
            scores = ledger.scores(self.reg, self.stream)
            todo = [t for t in measure if not ledger.find(scores.get(t, []), "prefix", position)]
            if self.fan_out is not None and len(todo) > 1:  # each as a task of its own (Ray)
                answers.update(self.fan_out(todo, position))
                todo = []
            for task in todo:
                self._check()
                answers[task] = reeval.rescore(
                    self.reg, self.backbone, self.book, self.stream, task, position, self.log.say
                ).predictions
        self._check()
        with self.log.step(tag, "prefix · task-agnostic (routed) evaluation"):
            self._task_agnostic([*earlier, self.name], position, answers, [*measure, self.name])
        self._check()
        self.reg.streams.finish_arrival(arrival.id, "done", proof)
        return {**summary, "position": position}

    # ---------------------------------------------------------------------------- the steps

    def _register(self, position: int, answers: dict[str, tuple[str, ...]]) -> dict[str, Any]:
        reg, plan, tag = self.reg, self.job.plan, self.tag
        own = self._own_score(position)
        if own is not None:
            self.log.say(f"{tag} · prefix · registered earlier (prefix id {own.prefix_id})")
            self._record_starts(position, None)
            return {"score": own.value, "metric": own.metric, "resumed": True}
        if reg.has_task(self.name):
            raise ConfigError(
                f"task {self.name} is already in the registry (trained outside stream "
                f"{self.stream}); `continual learn --task {self.name}` adds it to the stream "
                "with its current prefix, or give the arriving task another name"
            )
        if self.job.data_sha256 is None:
            raise IntegrityError(f"job for {self.name}: no stored data to train on")
        data = reg.data.get(self.job.data_sha256)
        self.book.remember(data)
        trained = train_task(
            reg,
            self.backbone,
            data,
            plan,
            log=self.log,
            tag=tag,
            bars=self.bars,
            with_starts=True,
            observe=self.observe,
            worker=str(self.runtime.get("worker", "")),
        )
        self._check()
        with self.log.step(tag, "prefix · register"):
            record = register_trained(
                reg,
                backbone=self.backbone,
                data=data,
                prefix_config=trained.pconfig,
                config=trained.config or plan.config,
                result=trained.result,
                evaluation=trained.evaluation,
                lineage=trained.lineage,
                new_version=False,
                position=position,
                stream=self.stream,
                data_sha256=self.job.data_sha256,
                training_state=plan.training_state,
                run_extra={
                    "stream": {
                        "name": self.stream,
                        "position": position,
                        "data_args": plan.data.to_dict(),
                        "data_fingerprint": data.fingerprint,
                        "backbone_bytes": self.backbone.n_bytes,
                    },
                    "runtime": self.runtime,
                    **trained.run_extra,
                },
                embeddings=trained.embeddings,
            )
        answers[self.name] = trained.evaluation.predictions
        self._record_starts(position, trained.starts)
        r, ev = trained.result, trained.evaluation
        return {
            "score": ev.score,
            "metric": ev.metric,
            "steps": r.steps,
            "best_step": r.best_step,
            "train_seconds": round(r.seconds, 2),
            "prefix_id": record.id,
            "module": trained.pconfig.kind,
        }

    def _adopt(self, position: int, answers: dict[str, tuple[str, ...]]) -> dict[str, Any]:
        """`learn --task T`: T's current prefix joins the stream at `position`, scored there on
        its own stored data (no training, no starting points: it did not learn here)."""
        reg, tag = self.reg, self.tag
        own = self._own_score(position)
        if own is None:
            view = reg.show(self.name)
            if view.current is None or view.current.data_sha256 is None:
                raise ConfigError(
                    f"task {self.name} has no current prefix with stored data to adopt; "
                    f"train it with `continual train` first"
                )
            run = reg.run(view.current.run_id).config if view.current.run_id else {}
            if "train" not in run:
                raise ConfigError(f"task {self.name}: an imported prefix cannot join a stream")
            config = TrainConfig.from_dict(run["train"])
            data = reg.data.get(view.current.data_sha256)
            self.book.remember(data)
            loaded = task_prefix_from_registry(reg, self.name, self.backbone)
            with self.log.step(tag, "prefix · adopt the registered prefix"):
                ev = evaluate(self.backbone, loaded, data.eval, batch_size=config.eval_batch_size)
            reg.streams.start_arrival(
                stream=self.stream, position=position, task=self.name, method=ledger.PREFIX
            )
            reg.record_evaluation(
                task=self.name,
                metric=ev.metric,
                value=ev.score,
                n=ev.n,
                prefix_id=view.current.id,
                position=position,
                predictions_sha256=ev.predictions_sha256,
                stream=self.stream,
            )
            answers[self.name] = ev.predictions
            return {"score": ev.score, "metric": ev.metric, "adopted": view.current.id}
        return {"score": own.value, "metric": own.metric, "adopted": own.prefix_id}

    def _own_score(self, position: int) -> EvaluationRecord | None:
        """The task's registration score at `position` of this stream, if an attempt wrote it."""
        mine = ledger.scores(self.reg, self.stream).get(self.name, [])
        found = ledger.find(mine, ledger.PREFIX, position)
        return found if found is not None and found.prefix_id is not None else None

    def _record_starts(self, position: int, starts: tuple[EvalResult, EvalResult] | None) -> None:
        scores = ledger.scores(self.reg, self.stream).get(self.name, [])
        missing = [
            w
            for w in ledger.UNTRAINED
            if ledger.find(scores, ledger.untrained_method(ledger.PREFIX, w), position) is None
        ]
        if not missing:
            return
        if starts is None:  # redone after a kill: the starting points are seeded, so recompute
            info = self.book.task(self.reg, self.name)
            data = self.book.data(self.reg, self.name)
            planned, _ = plan_start(self.reg, self.backbone, data, info.prefix_config)
            starts = prefix_starts(
                self.backbone, data, info.prefix_config, info.config, planned.tensors
            )
        for which, ev in zip(ledger.UNTRAINED, starts):
            if which in missing:
                method = ledger.untrained_method(ledger.PREFIX, which)
                ledger.record(self.reg, self.name, method, position, ev, self.stream)

    def _task_agnostic(
        self,
        tasks: list[str],
        position: int,
        answers: dict[str, tuple[str, ...]],
        evaluated: list[str],
    ) -> None:
        """Routed evaluation: inputs of the `evaluated` tasks, routed among all the stream's
        `tasks`. Tasks registered before routing keys existed cannot be routed: that (and only
        that) is skipped, saying so; any other failure fails the step, so the arrival is not
        finished without its rows."""
        from continual.routing import route_method

        keys = self.reg.embedding_ids(route_method(self.backbone))
        missing = [t for t in tasks if t not in keys]
        if missing:
            self.log.say(
                f"task-agnostic evaluation skipped at position {position}: no routing keys "
                f"for {', '.join(missing)} (registered before routing existed, or imported)"
            )
            return
        record_task_agnostic(
            self.reg,
            self.backbone,
            self.book,
            tasks,
            position,
            answers,
            self.route_cache,
            stream=self.stream,
            only=evaluated,
        )

    def _check(self) -> None:
        if not self.alive():
            raise LeaseLost(f"job for {self.name} in stream {self.stream}: lease lost")


class LeaseLost(RuntimeError):
    """This worker's lease on the job expired and another worker has taken the job over."""


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began
