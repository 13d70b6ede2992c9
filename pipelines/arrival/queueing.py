"""Arrivals into the queue, and the in-process drivers of `learn` and `stream run`.

    job = enqueue_arrival(reg, plan=plan, backbone="minilm", stream="default")
    learn(registry, plan=plan, backbone="minilm", stream="default")   # queue, then run it here
    run_stream(registry, spec)                                        # queue every arrival, run

Everything that can be refused is refused before anything is written: a task already in the
stream, a task name taken outside it (unless adopted), a stream on another backbone, bad data.
Then the data is validated and stored in the registry and the job queued, the data's row and
the job in one unit of work: a worker anywhere runs the job from the registry alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipelines import ledger
from pipelines.arrival.plan import ArrivalJob, ArrivalPlan, BaselinePlan
from pipelines.arrival.worker import Worker
from pipelines.progress import to_stderr
from pipelines.settings import RegistryArgs
from pipelines.stream import StreamSpec, check_on_backbone, executor_address, precheck
from registry import JobRecord, Registry
from registry.artifacts import undone_on_error
from registry.streams import check_stream
from tasks.errors import ConfigError
from tasks.load import load_data
from tasks.spec import TaskData


def enqueue_arrival(
    reg: Registry,
    *,
    plan: ArrivalPlan,
    backbone: str,
    stream: str,
    baselines: Sequence[BaselinePlan] = (),
    adopt: bool = False,
    data: TaskData | None = None,
    resume: bool = False,
) -> JobRecord:
    """Validate, store the data and queue `plan`'s arrival at the end of `stream`. `data`, if
    given, is the task's data already loaded and validated (an upload to the HTTP API); else
    it is loaded from `plan.data`. With `resume`, the same arrival's job that an earlier run
    left queued or running is returned instead of refused (`learn` runs it)."""
    check_stream(stream)
    name = plan.name
    here = ledger.arrival_of(reg, ledger.PREFIX, name, stream)
    held = reg.queue.live(stream=stream, task=name)
    asked = ArrivalJob(plan=plan, backbone=backbone, baselines=tuple(baselines), adopt=adopt)
    if resume and held is not None and held.state in ("queued", "running") and _same(held, asked):
        # The same arrival, queued by an earlier run of this command that stopped (a full
        # disk, a kill, a lost database) before its job was settled: go on with that job
        # rather than refuse it (a worker takes over a running job whose worker is gone; one
        # still alive is waited for).
        return held
    if here is not None and here.status == "done":
        raise ConfigError(
            f"task {name} already arrived at position {here.position} of stream {stream}; "
            "a new task needs a new --name"
        )
    _same_backbone(reg, stream, backbone)
    if held is not None:  # refused before the data is read or stored
        hint = (
            f"`continual jobs retry {held.id}` runs it again"
            if held.state == "failed"
            else f"see `continual jobs --stream {stream}`"
        )
        raise ConfigError(
            f"task {name} already has job {held.id} ({held.state}) in stream {stream}; {hint}"
        )
    if here is not None:  # an arrival an earlier run left unfinished: the job resumes it
        payload = ArrivalJob(plan=plan, backbone=backbone, baselines=tuple(baselines))
        return reg.queue.enqueue(stream=stream, task=name, payload=payload.to_dict())
    known = reg.has_task(name)
    if adopt:
        if not known:
            raise ConfigError(f"--task {name}: no such task in the registry; train it first")
        current = reg.show(name).current
        if current is None or current.data_sha256 is None or current.run_id is None:
            raise ConfigError(
                f"--task {name}: its current prefix has no stored data or training run "
                "(imported, or registered by an older version); retrain it with "
                f"`continual train --new-version --name {name}` to let it join a stream"
            )
        payload = ArrivalJob(plan=plan, backbone=backbone, baselines=tuple(baselines), adopt=True)
        return reg.queue.enqueue(stream=stream, task=name, payload=payload.to_dict())
    if known:
        raise ConfigError(
            f"task {name} is already in the registry (trained outside stream {stream}); "
            f"`continual learn --task {name}` adds it to the stream with its current prefix, "
            "or give the arriving task another --name"
        )
    # what the backbone cannot take (a prefix past its context, a LoRA target it lacks) is
    # refused now, before the data is read, not as a failed job later; a backbone only the
    # workers can read is theirs to check
    check_on_backbone((plan,), backbone, where="", strict=False)
    if data is None:
        data = load_data(plan.data, name)
    elif data.spec.name != name:
        data = TaskData(
            spec=data.spec.with_(name=name),
            train=data.train,
            eval=data.eval,
            fingerprint=data.fingerprint,
        )
    _objective_exists(name, backbone, data.spec.kind)
    with undone_on_error(reg.artifacts, reg.db) as written:  # no data file without its job
        row = reg.data.stage(data, written)
        payload = ArrivalJob(
            plan=plan, backbone=backbone, data_sha256=row["sha256"], baselines=tuple(baselines)
        )
        return reg.queue.enqueue(stream=stream, task=name, payload=payload.to_dict(), dataset=row)


def _same(job: JobRecord, asked: ArrivalJob) -> bool:
    """Whether the queued `job` is the arrival `asked` for (its data aside: stored at enqueue)."""
    mine = asked.to_dict()
    return all(job.payload.get(k) == mine[k] for k in ("plan", "backbone", "baselines", "adopt"))


def learn(
    registry: RegistryArgs,
    *,
    plan: ArrivalPlan,
    backbone: str,
    stream: str,
    baselines: Sequence[BaselinePlan] = (),
    adopt: bool = False,
    queue_only: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = to_stderr,
) -> dict[str, Any]:
    """`continual learn`: queue the arrival; unless `queue_only`, run it here (after any
    earlier job of the stream) and return its outcome."""
    with registry.open() as reg:
        job = enqueue_arrival(
            reg,
            plan=plan,
            backbone=backbone,
            stream=stream,
            baselines=baselines,
            adopt=adopt,
            resume=not queue_only,
        )
    if queue_only:
        return {"job": job.id, "state": job.state, "stream": stream, "task": job.task}
    Worker(registry=registry, progress=progress, say=say).serve(
        streams=[stream], until_jobs=(job.id,), raise_errors=True
    )
    with registry.open() as reg:
        done = reg.queue.get(job.id)
    return _outcome(done)


def run_stream(
    registry: RegistryArgs,
    spec: StreamSpec,
    *,
    stream: str | None = None,
    progress: bool = True,
    say: Callable[[str], None] = to_stderr,
) -> dict[str, Any]:
    """`continual stream run`: queue every arrival of `spec` not queued or done yet (in order),
    then run the stream's jobs here; arrivals done earlier are skipped."""
    precheck(spec)
    name = check_stream(stream or spec.name)
    jobs: list[JobRecord] = []
    skipped: list[dict[str, Any]] = []
    with registry.open() as reg:
        tasks = ledger.stream_tasks(reg, name)
        for position, plan in enumerate(spec.arrivals):
            if position < len(tasks) and tasks[position] != plan.name:
                raise ConfigError(
                    f"{spec.source}: arrival {position} is {plan.name}, but stream {name} has "
                    f"{tasks[position]} there; run it as another stream (--stream NAME)"
                )
            held = _live_job(reg, name, plan.name)
            if held is not None:
                jobs.append(held)
                continue
            if position < len(tasks):
                skipped.append({"task": plan.name, "position": position, "status": "skipped"})
                say(f"[{name}] {plan.name} · done earlier")
                continue
            jobs.append(
                enqueue_arrival(
                    reg, plan=plan, backbone=spec.backbone, stream=name, baselines=spec.baselines
                )
            )
        # A baseline added to the file after its arrivals ran catches up now (its rows are
        # written once each, so this is safe beside a worker that runs the stream's jobs).
        behind = (
            not jobs and tasks and not _baselines_done(reg, name, len(tasks) - 1, spec.baselines)
        )
    if behind:
        Worker(registry=registry, progress=progress, say=say).catch_up(
            name, spec.backbone, spec.baselines
        )
    address = executor_address(spec.executor, spec.source or "stream")
    if jobs and address is not None:  # each arrival a Ray task; the stream's order is the queue's
        from pipelines.arrival import ray_executor
        from registry.queue import lease_seconds

        ray_executor.serve(
            registry,
            ray_executor.RayOptions(address=address or None),
            streams=[name],
            until_empty=True,
            lease_s=lease_seconds(),
            say=say,
        )
    elif jobs:
        Worker(registry=registry, progress=progress, say=say).serve(
            streams=[name], until_jobs=tuple(j.id for j in jobs), raise_errors=True
        )
    outcomes = list(skipped)
    report = None
    with registry.open() as reg:
        for j in jobs:
            done = _outcome(reg.queue.get(j.id))
            report = done.get("report") or report
            outcomes.append(done)
        if report is None:
            from pipelines.report import write_report

            report = write_report(reg, stream=name)
    outcomes.sort(key=lambda o: o.get("position", 0))
    return {"stream": name, "source": spec.source, "arrivals": outcomes, "report": report}


def _outcome(job: JobRecord) -> dict[str, Any]:
    if job.state != "done":
        raise ConfigError(
            f"job {job.id} ({job.task}, stream {job.stream}) ended {job.state}: "
            f"{(job.error or '').strip().splitlines()[-1:] or ''}"
        )
    return {"job": job.id, **(job.result or {})}


def _live_job(reg: Registry, stream: str, task: str) -> JobRecord | None:
    for j in reg.queue.list(stream=stream) if has_stream(reg, stream) else []:
        if j.task == task and j.state in ("queued", "running"):
            return j
    return None


def has_stream(reg: Registry, stream: str) -> bool:
    return any(s.name == stream for s in reg.streams.list())


def stream_backbone(reg: Registry, stream: str) -> str | None:
    """The backbone named by the stream's first job (None: no job yet)."""
    if not has_stream(reg, stream):
        return None
    for j in reg.queue.list(stream=stream, limit=1):
        return (j.payload or {}).get("backbone")
    return None


def _baselines_done(
    reg: Registry, stream: str, position: int, baselines: Sequence[BaselinePlan]
) -> bool:
    methods = [b.name for b in baselines]
    return all(len(ledger.done_arrivals(reg, m, stream)) > position for m in methods)


def _objective_exists(task: str, backbone: str, task_kind: str) -> None:
    """Refuse at queue time a task kind the backbone cannot learn (a generation task on an
    encoder), when the backbone is an embedded one whose kind is known without loading it."""
    from continual.backbones import catalog
    from continual.objectives import objective

    entry = catalog().get(backbone)
    if entry is None:
        return  # a folder or hub id: its kind is known once loaded; the worker checks it
    try:
        objective(entry.kind, task_kind)
    except ConfigError as e:
        raise ConfigError(f"task {task} on backbone {backbone}: {e}") from None


def _same_backbone(reg: Registry, stream: str, backbone: str) -> None:
    """Refuse early a job naming another embedded backbone than the stream's earlier jobs (a
    folder or hub id may be spelt several ways: the worker checks the weights' fingerprint)."""
    from continual.backbones import catalog

    if backbone not in catalog():
        return
    other = stream_backbone(reg, stream)
    if other in catalog() and other != backbone:
        raise ConfigError(
            f"stream {stream} runs on backbone {other}, not {backbone}; use its backbone, "
            "or another --stream"
        )
