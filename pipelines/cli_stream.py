"""`continual learn`, `stream run|status|list`, `report`, `worker` and `jobs`.

    continual learn --backbone minilm --dataset trec [--stream S] [--queue] [train options]
    continual learn --task T [--stream S]            # a task trained with `train` joins S
    continual stream run streams/demo.yaml [--stream S]
    continual stream status streams/demo.yaml | stream list
    continual report [--stream S] [--out DIR]
    continual worker [--until-empty] [--max-jobs N] [--stream S ...]
    continual jobs [--stream S] [--state S] | jobs show ID | jobs cancel ID | jobs retry ID

An arrival is a job in the registry. `learn` and `stream run` queue their jobs and run them
here, through the same worker as `continual worker`; `learn --queue` only queues (any number
of workers, on any machine that reaches the registry, run the queue).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.cli_jobs import add_job_commands
from pipelines.cli_options import (
    add_training_options,
    data_args,
    module_choice,
    registry_args,
    train_config,
    tune_space,
)
from tasks.errors import ConfigError

Handler = Any
STREAM_HELP = "the stream (default: default; a stream file's `name:`)"
ORDER_HELP = (
    "the arrivals' order: 0 the file's (default), k >= 1 a permutation seeded by k; run each "
    "order in its own --home"
)


def add_stream_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `learn`, `stream`, `report`, `worker` and `jobs` to `subparsers`."""
    from continual.baselines import baselines

    def leaf(parent: Any, name: str, func: Handler, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = leaf(
        subparsers,
        "learn",
        cmd_learn,
        "a task arrives in a stream: train its prefix, register it, re-evaluate every earlier "
        "task of the stream, refresh the report",
    )
    add_training_options(p)
    p.add_argument(
        "--stream", default="default", help="the stream it arrives in (default: default)"
    )
    p.add_argument(
        "--task",
        metavar="TASK",
        help="instead of new data: a task already in the registry (trained with `train`) joins "
        "the stream with its current prefix",
    )
    p.add_argument(
        "--queue", action="store_true", help="only queue the arrival and print its job id"
    )
    reeval_options(p, "this arrival's")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=baselines(),
        help="also run this baseline on the stream (repeatable); baselines already in the "
        "stream always continue",
    )

    stream = subparsers.add_parser(
        "stream", help="run a stream file of arrivals", description="Run a stream file."
    )
    sub = stream.add_subparsers(dest="stream_command", required=True, metavar="COMMAND")
    p = leaf(sub, "run", cmd_stream_run, "run every arrival of a stream file, skipping those done")
    p.add_argument("file", metavar="STREAM", help="a stream file (YAML), e.g. streams/demo.yaml")
    p.add_argument("--stream", help=STREAM_HELP)
    p.add_argument("--order", type=int, default=0, help=ORDER_HELP)
    reeval_options(p, "every arrival's (the file's reeval and audit_k are overridden)")
    p.add_argument(
        "--executor",
        metavar="WHERE",
        help="local (here), ray (a local Ray instance) or ray:ADDRESS (a cluster); default: the "
        "file's executor, else $CONTINUAL_EXECUTOR, else local",
    )
    p = leaf(sub, "status", cmd_stream_status, "which arrivals of a stream file are done")
    p.add_argument("file", metavar="STREAM")
    p.add_argument("--stream", help=STREAM_HELP)
    p.add_argument("--order", type=int, default=0, help=ORDER_HELP)
    leaf(sub, "list", cmd_stream_list, "the registry's streams, their arrivals and jobs")

    p = leaf(subparsers, "report", cmd_report, "write a stream's continual-learning report")
    p.add_argument("--stream", default="default", help="which stream (default: default)")
    p.add_argument("--out", metavar="DIR", help="where to write it (default: <home>/report)")
    add_job_commands(subparsers, common)


def reeval_options(p: argparse.ArgumentParser, whose: str) -> None:
    from pipelines.arrival.reeval import AUDIT_K, AUTO_FULL_UP_TO, CHOICES

    p.add_argument(
        "--reeval",
        choices=CHOICES,
        help=f"how {whose} earlier tasks are re-evaluated: full (re-score all), audit "
        f"(verify every module's and the backbone's hashes, re-score a rotating sample), "
        f"proof (hashes only); default auto: full for the first {AUTO_FULL_UP_TO} tasks of a "
        "stream, audit after",
    )
    p.add_argument(
        "--audit-k",
        type=int,
        metavar="K",
        help=f"earlier tasks re-scored per arrival under audit (default {AUDIT_K})",
    )


def _plan(a: argparse.Namespace, name: str):
    from pipelines.arrival.plan import INIT, PREFIX_LENGTH, ArrivalPlan
    from pipelines.arrival.reeval import AUDIT_K, AUTO
    from pipelines.stream import resolve_path

    module, module_options = module_choice(a)
    data = data_args(a)
    data = replace(
        data, train=resolve_path(data.train, Path.cwd()), eval=resolve_path(data.eval, Path.cwd())
    )
    return ArrivalPlan(
        name=name,
        data=data,
        config=train_config(a),
        prefix_length=a.prefix_length or PREFIX_LENGTH,
        positions=a.positions,
        init=a.init or INIT,
        reeval=getattr(a, "reeval", None) or AUTO,
        audit_k=AUDIT_K if getattr(a, "audit_k", None) is None else a.audit_k,
        tune=tune_space(a),
        training_state=not getattr(a, "no_training_state", False),
        module=module or "prefix",
        module_options=module_options,
    )


def cmd_learn(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.arrival.plan import BaselinePlan
    from pipelines.arrival.queueing import learn

    registry = registry_args(a)
    baselines = [BaselinePlan(name=b) for b in dict.fromkeys(a.baseline)]
    if a.task:
        if a.dataset or a.train or a.name:
            raise ConfigError("--task adopts a registered task; drop --dataset, --train, --name")
        from pipelines.jobs import backbone_ref

        with registry.open() as reg:
            current = reg.show(a.task).current
            stored = reg.backbone(current.backbone_fingerprint) if current else None
            backbone = a.backbone or (backbone_ref(stored) if stored else None)
        if not backbone:
            raise ConfigError(f"--task {a.task}: it has no current prefix; train it first")
        plan = _plan(a, a.task)
        adopt = True
    else:
        name = a.name or a.dataset
        if not name:
            raise ConfigError("--name TASK is required with --train FILE")
        if not a.backbone:
            raise ConfigError("--backbone is required (minilm, smollm2, a model folder or hub id)")
        plan, backbone, adopt = _plan(a, name), a.backbone, False
    result = learn(
        registry,
        plan=plan,
        backbone=backbone,
        stream=a.stream,
        baselines=baselines,
        adopt=adopt,
        queue_only=a.queue,
        progress=not getattr(a, "quiet", False),
    )
    if a.queue:
        return {
            **result,
            "_human": f"queued job {result['job']}: {result['task']} "
            f"in stream {result['stream']} (run `continual worker`)",
        }
    return _with_text(result, _arrival_line(result))


def cmd_stream_run(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.arrival.queueing import run_stream
    from pipelines.stream import in_order, load_stream

    spec = in_order(load_stream(a.file), a.order)
    executor = a.executor or (
        os.environ.get("CONTINUAL_EXECUTOR") if spec.executor == "local" else None
    )
    if executor:
        spec = replace(spec, executor=executor)
    if a.reeval is not None or a.audit_k is not None:
        spec = replace(
            spec,
            arrivals=tuple(
                replace(
                    plan,
                    reeval=a.reeval or plan.reeval,
                    audit_k=plan.audit_k if a.audit_k is None else a.audit_k,
                )
                for plan in spec.arrivals
            ),
        )
    result = run_stream(
        registry_args(a), spec, stream=a.stream, progress=not getattr(a, "quiet", False)
    )
    lines = [_arrival_line(o) for o in result["arrivals"]]
    return _with_text(result, "\n".join(lines))


def cmd_stream_status(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines import ledger
    from pipelines.stream import in_order, load_stream

    spec = in_order(load_stream(a.file), a.order)
    name = a.stream or spec.name
    methods = ["prefix", *(b.name for b in spec.baselines)]
    with registry_args(a).open() as reg:
        tasks = ledger.stream_tasks(reg, name)
        done = {m: len(ledger.done_arrivals(reg, m, name)) for m in methods}
    rows = []
    for position, plan in enumerate(spec.arrivals):
        here = tasks[position] if position < len(tasks) else None
        rows.append(
            {
                "position": position,
                "task": plan.name,
                "conflict": here is not None and here != plan.name,
                **{m: done[m] > position for m in methods},
            }
        )
    text = f"stream {name}\n" + "\n".join(
        f"{r['position']:>3}  {r['task']:<20} "
        + "  ".join(f"{m}:{'done' if r[m] else 'todo'}" for m in methods)
        + ("  CONFLICT: the stream has another task here" if r["conflict"] else "")
        for r in rows
    )
    return {"stream": name, "source": spec.source, "arrivals": rows, "_human": text}


def cmd_stream_list(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.cli_jobs import render_table

    with registry_args(a).open() as reg:
        streams = reg.streams.list()
    rows = [
        [s.name, s.arrivals, ", ".join(f"{st} {n}" for st, n in s.jobs) or "-", s.description]
        for s in streams
    ]
    text = render_table(["stream", "arrivals", "jobs", "description"], rows)
    return {"streams": [s.to_dict() for s in streams], "_human": text}


def cmd_report(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.report import write_report

    with registry_args(a).open() as reg:
        reg.streams.get(a.stream)  # a clear error for a stream that does not exist
        report = write_report(reg, Path(a.out) if a.out else None, stream=a.stream)
    result = {"report": report}
    if not report["ok"]:
        result["_exit_code"] = 1
    return _with_text(result, "")


def _arrival_line(o: dict[str, Any]) -> str:
    if o.get("status") == "skipped":
        return f"{o['position']:>3}  {o['task']}: done earlier"
    parts = []
    for method, s in o.items():
        if isinstance(s, dict) and "score" in s:
            parts.append(f"{method} {100 * s['score']:.1f}%")
    return f"{o['position']:>3}  {o['task']}: " + ", ".join(parts) + f" ({o['seconds']:.0f} s)"


def _with_text(result: dict[str, Any], head: str) -> dict[str, Any]:
    """Add the human-readable text: what happened, where the report is, the metrics table."""
    report = result.get("report") or {}
    lines = [head] if head else []
    if report and "table" in report:
        if not report["ok"]:
            lines.append("!!! MISMATCH: the no-forgetting evidence does not hold; see the report")
        lines += [f"report: {report['html']}", "", report["table"]]
    elif report:
        lines.append(f"report: {report['html']}")
    return {**result, "_human": "\n".join(lines)}
