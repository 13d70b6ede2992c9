"""`continual learn`, `continual stream run|status` and `continual report`.

    continual learn --backbone minilm --dataset trec [--baseline sequential-ft] [train options]
    continual stream run streams/demo.yaml
    continual stream status streams/demo.yaml
    continual report [--out DIR]

`learn` takes the data and training options of `train`; the task arrives at the end of the
workspace's stream (position = the number of earlier arrivals), earlier tasks are re-evaluated
and the report is refreshed. Progress goes to stderr, one line per arrival and step.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

Handler = Any


def add_stream_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `learn`, `stream` and `report` to `subparsers`; leaves take `common`'s options."""
    from continual.baselines import baselines
    from pipelines.cli_options import add_training_options

    def leaf(parent: Any, name: str, func: Handler, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = leaf(
        subparsers,
        "learn",
        cmd_learn,
        "a task arrives: train its prefix, register it, re-evaluate every earlier task, "
        "refresh the report",
    )
    add_training_options(p)
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=baselines(),
        help="also run this baseline on the stream (repeatable); baselines already in the "
        "workspace always continue",
    )

    stream = subparsers.add_parser(
        "stream", help="run a stream file of arrivals", description="Run a stream file."
    )
    sub = stream.add_subparsers(dest="stream_command", required=True, metavar="COMMAND")
    p = leaf(sub, "run", cmd_stream_run, "run every arrival of a stream file, skipping those done")
    p.add_argument("file", metavar="STREAM", help="a stream file (YAML), e.g. streams/demo.yaml")
    p = leaf(sub, "status", cmd_stream_status, "which arrivals of a stream file are done")
    p.add_argument("file", metavar="STREAM")

    p = leaf(subparsers, "report", cmd_report, "write the continual-learning report")
    p.add_argument("--out", metavar="DIR", help="where to write it (default: <home>/report)")


def _orchestrator(a: argparse.Namespace, backbone: str):
    from pipelines.cli_options import registry_args
    from pipelines.orchestrator import Orchestrator
    from pipelines.report import write_report

    return Orchestrator(
        registry=registry_args(a),
        backbone=backbone,
        progress=not getattr(a, "quiet", False),
        report=lambda reg: write_report(reg),
    )


def cmd_learn(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.cli_options import data_args, train_config
    from pipelines.stream import ArrivalPlan, BaselinePlan, resolve_path
    from tasks.errors import ConfigError

    data = data_args(a)
    name = a.name or data.dataset
    if not name:
        raise ConfigError("--name TASK is required with --train FILE")
    data = replace(
        data, train=resolve_path(data.train, Path.cwd()), eval=resolve_path(data.eval, Path.cwd())
    )
    plan = ArrivalPlan(
        name=name,
        data=data,
        config=train_config(a),
        prefix_length=a.prefix_length or 16,
        positions=a.positions,
        init=a.init or "random",
    )
    result = _orchestrator(a, a.backbone).learn(
        plan, [BaselinePlan(name=b) for b in dict.fromkeys(a.baseline)]
    )
    return _with_text(result, _arrival_line(result))


def cmd_stream_run(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.stream import load_stream

    spec = load_stream(a.file)
    result = _orchestrator(a, spec.backbone).run_stream(spec)
    lines = [_arrival_line(o) for o in result["arrivals"]]
    return _with_text(result, "\n".join(lines))


def cmd_stream_status(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines import ledger
    from pipelines.cli_options import registry_args
    from pipelines.stream import load_stream

    spec = load_stream(a.file)
    methods = ["prefix", *(b.name for b in spec.baselines)]
    with registry_args(a).open() as reg:
        tasks = ledger.stream_tasks(reg)
        done = {m: len(ledger.done_arrivals(reg, m)) for m in methods}
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
    text = "\n".join(
        f"{r['position']:>3}  {r['task']:<20} "
        + "  ".join(f"{m}:{'done' if r[m] else 'todo'}" for m in methods)
        + ("  CONFLICT: the workspace has another task here" if r["conflict"] else "")
        for r in rows
    )
    return {"stream": spec.source, "arrivals": rows, "_human": text}


def cmd_report(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.cli_options import registry_args
    from pipelines.report import write_report

    with registry_args(a).open() as reg:
        report = write_report(reg, Path(a.out) if a.out else None)
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
    if report:
        if not report["ok"]:
            lines.append("!!! MISMATCH: the no-forgetting evidence does not hold; see the report")
        lines += [f"report: {report['html']}", "", report["table"]]
    return {**result, "_human": "\n".join(lines)}
