"""`continual worker` and `continual jobs`: the arrival queue from the command line.

continual worker [--until-empty] [--max-jobs N] [--stream S ...]
continual jobs [--stream S] [--state STATE] [--limit N --offset N]
continual jobs show ID | jobs cancel ID | jobs retry ID
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pipelines.cli_options import registry_args
from pipelines.tables import last_line


def add_job_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    def leaf(parent: Any, name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = leaf(subparsers, "worker", cmd_worker, "take queued arrival jobs and run them")
    p.add_argument(
        "--until-empty",
        action="store_true",
        help="stop when no job is queued or running (default: wait for jobs until stopped)",
    )
    p.add_argument("--max-jobs", type=int, help="stop after running N jobs")
    p.add_argument(
        "--stream", action="append", help="only jobs of this stream (repeatable; default: all)"
    )
    p.add_argument(
        "--lease",
        type=float,
        help="lease seconds (default $CONTINUAL_LEASE_S, else 60): how long a job this worker "
        "stops renewing waits before another worker takes it",
    )
    p.add_argument(
        "--poll", type=float, default=2.0, help="seconds between looks at an empty queue"
    )
    p.add_argument(
        "--no-search-help",
        action="store_true",
        help="when idle, do not add trials to other workers' running `--tune` searches "
        "(default: help; the study is shared, the arrival's worker keeps the winner)",
    )
    r = p.add_argument_group("Ray (arrivals as Ray tasks: pipelines/arrival/ray_executor.py)")
    r.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run each arrival as a Ray task: on a local Ray instance started here, or on the "
        "cluster at ADDRESS (auto, host:6379, ray://host:10001)",
    )
    r.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per arrival (default 1)")
    r.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs per arrival (default 0)")
    r.add_argument("--ray-memory", type=int, metavar="MB", help="memory per arrival, in MB")
    r.add_argument(
        "--parallel",
        type=int,
        help="arrivals in flight at once (default: the cluster's CPUs / --ray-cpus)",
    )

    jobs = subparsers.add_parser(
        "jobs",
        parents=[common],
        help="list, show, cancel and retry arrival jobs",
        description="Arrival jobs in the registry's queue.",
    )
    jobs.set_defaults(func=cmd_jobs)
    jobs.add_argument("--stream", help="only this stream's jobs")
    jobs.add_argument(
        "--state", choices=("queued", "running", "done", "failed", "cancelled"), help="only these"
    )
    jobs.add_argument("--limit", type=int, default=100)
    jobs.add_argument("--offset", type=int, default=0)
    sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    leaf(sub, "show", cmd_job_show, "one job, with its payload, error and result").add_argument(
        "id", type=int
    )
    leaf(sub, "cancel", cmd_job_cancel, "cancel a queued job").add_argument("id", type=int)
    leaf(sub, "retry", cmd_job_retry, "queue a failed job again").add_argument("id", type=int)


def cmd_worker(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.arrival.worker import Worker
    from tasks.errors import ConfigError

    if a.max_jobs is not None and a.max_jobs < 1:
        raise ConfigError(f"--max-jobs must be at least 1, got {a.max_jobs}")
    if a.lease is not None and not a.lease > 0:
        raise ConfigError(f"--lease must be above 0 seconds, got {a.lease}")
    if a.ray is not None:
        return _worker_on_ray(a)
    worker = Worker(
        registry=registry_args(a),
        progress=not getattr(a, "quiet", False),
        lease_s=a.lease,
        poll_s=a.poll,
        migrate=False,  # migrations run once, by `continual registry upgrade`
        help_searches=not a.no_search_help,
    )
    worker.stop_on_signals()
    worker.say(f"worker {worker.id} · lease {worker.lease_s:.0f} s")
    outcomes = worker.serve(streams=a.stream, until_empty=a.until_empty, max_jobs=a.max_jobs)
    rows = [[o["job"], o.get("stream", ""), o.get("task", ""), o["state"]] for o in outcomes]
    text = f"worker {worker.id}: {len(outcomes)} job(s)"
    if rows:
        text += "\n" + render_table(["job", "stream", "task", "state"], rows)
    return {"worker": worker.id, "jobs": outcomes, "_human": text}


def _worker_on_ray(a: argparse.Namespace) -> dict[str, Any]:
    import signal
    import threading

    from pipelines.arrival import ray_executor
    from registry.queue import lease_seconds

    options = ray_executor.RayOptions(
        address=a.ray or None,
        cpus=a.ray_cpus,
        gpus=a.ray_gpus,
        memory_mb=a.ray_memory,
        parallel=a.parallel,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    outcomes = ray_executor.serve(
        registry_args(a),
        options,
        streams=a.stream,
        until_empty=a.until_empty,
        max_jobs=a.max_jobs,
        lease_s=a.lease or lease_seconds(),
        poll_s=min(a.poll, 1.0),
        stopping=stop.is_set,
    )
    rows = [[o["job"], o.get("stream", ""), o.get("task", ""), o["state"]] for o in outcomes]
    text = f"ray driver: {len(outcomes)} job(s)"
    if rows:
        text += "\n" + render_table(["job", "stream", "task", "state"], rows)
    return {"executor": "ray", "jobs": outcomes, "_human": text}


def cmd_jobs(a: argparse.Namespace) -> dict[str, Any]:
    with registry_args(a).open() as reg:
        jobs = reg.queue.list(stream=a.stream, state=a.state, limit=a.limit, offset=a.offset)
        total = reg.queue.count(stream=a.stream, states=(a.state,) if a.state else ())
    rows = [
        [
            j.id,
            j.stream,
            j.task,
            j.state,
            "-" if j.position is None else j.position,
            f"{j.attempts}/{j.max_attempts}",
            j.worker_id or "-",
            last_line(j.error, 60),
        ]
        for j in jobs
    ]
    text = render_table(["job", "stream", "task", "state", "pos", "tries", "worker", "error"], rows)
    shown = a.offset + len(jobs)
    if shown < total:
        text += f"\n{total - shown} more: --offset {shown}"
    return {
        "jobs": [j.to_dict() for j in jobs],
        "total": total,
        "offset": a.offset,
        "_human": text,
    }


def cmd_job_show(a: argparse.Namespace) -> dict[str, Any]:
    import json

    with registry_args(a).open() as reg:
        job = reg.queue.get(a.id)
    return {"job": job.to_dict(), "_human": json.dumps(job.to_dict(), indent=2, default=str)}


def cmd_job_cancel(a: argparse.Namespace) -> dict[str, Any]:
    with registry_args(a).open() as reg:
        job = reg.queue.cancel(a.id)
    return {"job": job.to_dict(), "_human": f"job {job.id} ({job.task}): {job.state}"}


def cmd_job_retry(a: argparse.Namespace) -> dict[str, Any]:
    with registry_args(a).open() as reg:
        job = reg.queue.retry(a.id)
    return {"job": job.to_dict(), "_human": f"job {job.id} ({job.task}): {job.state}"}


def render_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns with a rule under the header; numbers right-aligned."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(r[i], int | float) for r in rows) and bool(rows) for i in range(len(header))
    ]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    if not rows:
        out.append("(none)")
    return "\n".join(out)
