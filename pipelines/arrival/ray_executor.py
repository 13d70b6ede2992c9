"""Arrivals as Ray tasks: `continual worker --ray [ADDRESS]` (or `executor: ray` in settings).

The driver takes jobs from the registry's queue exactly as a worker does (a stream's head only, so
each stream runs in position order and different streams in parallel) and hands each to Ray as a
task with declared resources (`--ray-cpus`, `--ray-gpus`, `--ray-memory`); Ray places it on any
machine of the cluster that has them. Without an address a local Ray instance is started on this
machine; with one (`auto`, or `ray://host:10001`, or `host:6379`) the driver joins that cluster.

Inside the task the arrival runs through the same `Worker.run` as everywhere else, under the
lease the driver took for it (renewed by the task's heartbeat). Ray retries a task whose worker
process died; the retry finds the job still running under its lease and redoes it, and every write
a redone step repeats is absorbed by the database's unique constraints, so a retry never adds a
row. If the lease was lost meanwhile (another worker took the job), the retry does nothing.
Machines of the cluster need the registry database (PostgreSQL), the store (`--store s3://...`)
and the MLflow server reachable: see docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.progress import to_stderr
from pipelines.settings import RegistryArgs
from tasks.errors import ConfigError

# per Ray worker process: workers (with their backbones), backbones and stream books stay loaded
_WORKERS: dict[RegistryArgs, Any] = {}
_BACKBONES: dict[str, Any] = {}
_BOOKS: dict[tuple[RegistryArgs, str], Any] = {}


@dataclass(frozen=True)
class RayOptions:
    """Where and with what each arrival runs on Ray."""

    address: str | None = None  # None: a local Ray instance on this machine
    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int | None = None
    parallel: int | None = None  # arrivals in flight at once (default: what the CPUs allow)
    retries: int = 2  # Ray's retries of a task whose worker process died
    report: bool = True  # rewrite the stream's report after each arrival (as a worker does)

    def __post_init__(self) -> None:
        if self.cpus <= 0 or self.gpus < 0:
            raise ConfigError("--ray-cpus must be above 0 and --ray-gpus at least 0")
        if self.memory_mb is not None and self.memory_mb <= 0:
            raise ConfigError("--ray-memory must be a positive number of MB")
        if self.parallel is not None and self.parallel < 1:
            raise ConfigError("--parallel must be at least 1")


def run_arrival(
    registry: RegistryArgs, job_id: int, worker: str, lease_s: float, options: RayOptions
) -> dict:
    """The body of one Ray task: run the claimed job `job_id` under `worker`'s lease; its
    re-evaluations fan out as Ray tasks of their own (`fan_out`)."""
    from pipelines.arrival.worker import Worker

    w = _WORKERS.get(registry)
    if w is None:
        w = _WORKERS[registry] = Worker(
            registry=registry, progress=False, lease_s=lease_s, migrate=False, report=options.report
        )
    w.id = worker
    w.fan_out = lambda stream, backbone: functools.partial(
        fan_out, registry, stream, backbone, options
    )
    with registry.open(migrate=False) as reg:
        job = reg.queue.get(job_id)
        if job.state != "running" or job.worker_id != worker:  # a retry after the lease was lost
            return {"job": job_id, "task": job.task, "stream": job.stream, "state": "lost"}
        return {**w.run(reg, job), "ray_node": os.uname().nodename, "pid": os.getpid()}


def fan_out(
    registry: RegistryArgs, stream: str, backbone: str, options: RayOptions, tasks: list[str],
    position: int,
) -> dict[str, tuple[str, ...]]:  # fmt: skip
    """Re-score `tasks` at `position` of `stream`, one Ray task each (each records its score);
    returns their predictions (the routed evaluation reuses them)."""
    import ray

    remote = ray.remote(rescore_task).options(
        num_cpus=options.cpus, num_gpus=options.gpus, max_retries=options.retries
    )
    refs = [remote.remote(registry, stream, backbone, t, position) for t in tasks]
    return dict(zip(tasks, ray.get(refs)))


def rescore_task(
    registry: RegistryArgs, stream: str, backbone: str, task: str, position: int
) -> tuple[str, ...]:
    """The body of one re-evaluation's Ray task (writes tolerate a retry's repeat)."""
    from continual.backbones import load_backbone
    from pipelines.arrival.book import TaskBook
    from pipelines.arrival.reeval import rescore

    if backbone not in _BACKBONES:
        _BACKBONES[backbone] = load_backbone(backbone)
    book = _BOOKS.setdefault((registry, stream), TaskBook(stream))
    with registry.open(migrate=False) as reg:
        ev = rescore(reg, _BACKBONES[backbone], book, stream, task, position, to_stderr)
    return ev.predictions


def connect(options: RayOptions) -> Any:
    """Ray, started locally or joined at `options.address`; a clear line if neither works."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs the ray package: pip install 'continual-prefix[ray]'"
        ) from None
    if not ray.is_initialized():
        try:
            ray.init(
                address=options.address,
                include_dashboard=False,
                ignore_reinit_error=True,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = options.address or "a local instance"
            raise ConfigError(
                f"cannot start or join Ray at {where}: {str(e).strip().splitlines()[0]}; "
                "check the address (`ray status` on the head node)"
            ) from None
    return ray


def serve(
    registry: RegistryArgs,
    options: RayOptions,
    *,
    streams: list[str] | None = None,
    until_empty: bool = False,
    max_jobs: int | None = None,
    lease_s: float,
    poll_s: float = 1.0,
    say: Callable[[str], None] = to_stderr,
    stopping: Callable[[], bool] = lambda: False,
) -> list[dict[str, Any]]:
    """Take queued jobs and run each as a Ray task, until the queue is empty (`until_empty`),
    `max_jobs` were started, or `stopping()`; returns each job's outcome. Ray's own messages
    (its workers' output, a worker that died) go to stderr: stdout stays the command's."""
    with contextlib.redirect_stdout(sys.stderr):
        ray = connect(options)
        try:
            return _serve(
                ray,
                registry,
                options,
                streams,
                until_empty,
                max_jobs,
                lease_s,
                poll_s,
                say,
                stopping,
            )
        finally:
            ray.shutdown()


def _serve(
    ray: Any,
    registry: RegistryArgs,
    options: RayOptions,
    streams: list[str] | None,
    until_empty: bool,
    max_jobs: int | None,
    lease_s: float,
    poll_s: float,
    say: Callable[[str], None],
    stopping: Callable[[], bool],
) -> list[dict[str, Any]]:
    from pipelines.arrival.worker import gone, worker_id

    resources: dict[str, Any] = {"num_cpus": options.cpus, "num_gpus": options.gpus}
    if options.memory_mb:
        resources["memory"] = options.memory_mb * 1024 * 1024
    task = ray.remote(run_arrival).options(
        **resources, max_retries=options.retries, retry_exceptions=False, name="run_arrival"
    )
    parallel = options.parallel or max(
        1, int(ray.cluster_resources().get("CPU", 1) // options.cpus)
    )
    driver = worker_id()
    say(f"ray driver {driver} · {parallel} arrival(s) at once · {resources}")
    running: dict[Any, Any] = {}
    outcomes: list[dict[str, Any]] = []
    started = 0
    with registry.open(migrate=False) as reg:
        while True:
            while (
                len(running) < parallel
                and not stopping()
                and (max_jobs is None or started < max_jobs)
            ):
                wid = f"{driver}:ray-{uuid.uuid4().hex[:6]}"
                job = reg.queue.claim(wid, lease_s=lease_s, streams=streams, dead=gone)
                if job is None:
                    break
                say(f"job {job.id} · {job.task} in stream {job.stream} → Ray task")
                running[task.remote(registry, job.id, wid, lease_s, options)] = job
                started += 1
            if not running:
                done = stopping() or (max_jobs is not None and started >= max_jobs)
                if done or (until_empty and reg.queue.runnable(streams) == 0):
                    break
                time.sleep(poll_s)
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=poll_s)
            for ref in ready:
                job = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the task died past its retries
                    first = (str(e).strip().splitlines() or [""])[0][:300]
                    outcome = {"job": job.id, "task": job.task, "stream": job.stream}
                    outcome |= {"state": "lost", "error": f"{type(e).__name__}: {first}"}
                say(f"job {job.id} · {job.task}: {outcome.get('state')}")
                outcomes.append(outcome)
    return outcomes
