"""`continual registry ...`: the registry's commands, each a handler returning a JSON-able dict.

    continual registry tasks [--limit N --offset N]
    continual registry prefixes [--task NAME --limit N --offset N]
    continual registry show TASK | history TASK | lineage TASK
    continual registry export TASK --format peft|safetensors --out DIR
    continual registry import DIR [--backbone NAME | --backbone-fingerprint FP] [--new-version]
                                  [--name TASK --labels A,B | --kind generation]
    continual registry check [--repair] [--mlflow]
    continual registry sync-mlflow
    continual registry upgrade

`check` finding problems returns {"ok": False, ..., "_exit_code": 1} so the process exits 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines import tables

Handler = Callable[[argparse.Namespace], dict[str, Any]]


def add_registry_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `registry` and its subcommands to `subparsers`; leaves take `common`'s options."""
    registry = subparsers.add_parser(
        "registry",
        help="query and maintain the prefix registry",
        description="Query and maintain the prefix registry (SQL rows, safetensors files, MLflow).",
    )
    sub = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    def leaf(name: str, func: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = leaf("tasks", cmd_tasks, "list tasks in order of arrival")
    _paging(p)
    p = leaf("prefixes", cmd_prefixes, "list prefix versions, newest first")
    p.add_argument("--task", help="only this task's versions")
    _paging(p)
    leaf("show", cmd_show, "a task's current prefix, latest metrics and lineage").add_argument(
        "task", metavar="TASK"
    )
    leaf("history", cmd_history, "every evaluation of a task over time").add_argument(
        "task", metavar="TASK"
    )
    p = leaf("lineage", cmd_lineage, "which prefixes a task's prefix was initialised from")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--version", type=int, help="that version instead of the current one")
    p = leaf("export", cmd_export, "write a prefix as a PEFT adapter or safetensors files")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--format", dest="fmt", choices=("peft", "safetensors"), required=True)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument("--version", type=int, help="that version instead of the current one")
    p = leaf("import", cmd_import, "register a module folder written by export (or by PEFT)")
    p.add_argument("dir", metavar="DIR")
    bb = p.add_mutually_exclusive_group()
    bb.add_argument(
        "--backbone",
        metavar="NAME_OR_FOLDER",
        help="the backbone it was trained on: stored with it, and the module is tried on it "
        "before anything is written (a bare PEFT adapter needs this or --backbone-fingerprint)",
    )
    bb.add_argument("--backbone-fingerprint", help="the backbone's fingerprint, without loading it")
    g = p.add_argument_group("task, for an adapter saved without one (PEFT's own folders)")
    g.add_argument("--name", help="the task's name")
    g.add_argument("--labels", metavar="A,B,...", help="its labels, in order (classification)")
    g.add_argument("--kind", choices=("classification", "generation"))
    g.add_argument("--description", default="", help="one line saying what the task is")
    p.add_argument(
        "--new-version", action="store_true", help="add it as a new version of an existing task"
    )
    p = leaf("check", cmd_check, "find missing, corrupt and orphan artifact files")
    p.add_argument(
        "--repair", action="store_true", help="remove orphan files and mark broken prefixes"
    )
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="also read every prefix's MLflow copy back and check it against the registry "
        "(with --repair: log damaged copies again, mirror lost runs anew)",
    )
    p = leaf(
        "similar",
        cmd_similar,
        "the earlier tasks most like a registered task, or like new data given as files",
    )
    p.add_argument("task", metavar="TASK", nargs="?", help="a task in the registry")
    p.add_argument("--train", help="new data instead of TASK: JSONL, CSV/TSV or Parquet")
    p.add_argument("--kind", choices=("classification", "generation"), default="classification")
    p.add_argument("--text-field", default="", help="input text field (default: text)")
    tgt = p.add_mutually_exclusive_group()
    tgt.add_argument("--label-field", dest="target_field", default="", help="label field")
    tgt.add_argument("--target-field", dest="target_field", help="target field (generation)")
    p.add_argument("--top", type=int, default=5, help="how many to list (default 5)")
    p.add_argument(
        "--method",
        choices=("embedding", "prefix"),
        default="embedding",
        help="embedding: task embeddings (inputs + label words) from the frozen backbone; "
        "prefix: SPoT's cosine of average-pooled prefixes (registered tasks only)",
    )
    p.add_argument(
        "--backbone",
        help="the backbone (default: TASK's recorded one, or for --train the registry's)",
    )
    leaf("sync-mlflow", cmd_sync_mlflow, "mirror to MLflow what it missed while unreachable")
    leaf("upgrade", cmd_upgrade, "migrate the registry database to the newest schema")


def _paging(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--limit", type=int, default=100, help="rows shown (default 100; the rest are counted)"
    )
    p.add_argument("--offset", type=int, default=0, help="rows to skip (default 0)")


def _args(a: argparse.Namespace) -> Any:
    from pipelines.settings import RegistryArgs

    return RegistryArgs.from_namespace(a)


def _open(a: argparse.Namespace) -> Any:
    return _args(a).open()


def cmd_tasks(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        rows = reg.tasks(limit=a.limit, offset=a.offset)
        total = reg.count_tasks()
    tasks = [r.to_dict() for r in rows]
    text = tables.table(
        ("id", "task", "kind", "labels", "description", "created"),
        (
            (t["id"], t["name"], t["kind"], t["spec"].get("labels") or None, t["description"],
             t["created_at"])
            for t in tasks
        ),
    )  # fmt: skip
    return {
        "tasks": tasks,
        "limit": a.limit,
        "offset": a.offset,
        "total": total,
        "_human": _with_more(text, len(tasks), a.offset, total, "tasks"),
    }


def cmd_prefixes(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        rows = reg.prefixes(task=a.task, limit=a.limit, offset=a.offset)
        total = reg.count_prefixes(a.task)
    prefixes = [r.to_dict() for r in rows]
    text = tables.table(
        ("id", "task", "version", "current", "status", "module", "backbone", "steps",
         "final loss", "bytes", "created"),
        (
            (p["id"], p["task"], p["version"], "*" if p["is_current"] else "", p["status"],
             p.get("kind") or "prefix", p["backbone_name"], p["train"]["steps"],
             p["train"]["final_loss"], p["n_bytes"], p["created_at"])
            for p in prefixes
        ),
    )  # fmt: skip
    return {
        "prefixes": prefixes,
        "limit": a.limit,
        "offset": a.offset,
        "total": total,
        "_human": _with_more(text, len(prefixes), a.offset, total, "prefixes"),
    }


def _with_more(text: str, shown: int, offset: int, total: int, noun: str) -> str:
    note = tables.more(shown, offset, total, noun)
    return text if note is None else f"{text}\n{note}"


def cmd_show(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        view = reg.show(a.task).to_dict()
    t, p = view["task"], view["current"]
    about = [
        ("task", t["name"]),
        ("kind", t["kind"]),
        ("labels", t["spec"].get("labels") or None),
        ("description", t["description"]),
        ("versions", view["versions"]),
    ]
    if p is None:
        about.append(("current", "none (no usable prefix: train it)"))
    else:
        about += [
            ("current", f"v{p['version']} (prefix id {p['id']}, {p['status']})"),
            ("module", p.get("kind") or "prefix"),
            ("backbone", f"{p['backbone_name']} ({p['backbone_fingerprint'][:12]}…)"),
            ("trained", f"{p['train']['steps']} steps, {p['train']['seconds']:.1f} s"),
            ("artifact", p["artifact_path"]),
            ("mlflow run", view["mlflow_run_id"]),
        ]
    parts = [tables.key_values(about)]
    if view["metrics"]:
        parts.append(tables.section("latest scores", _evaluations(view["metrics"])))
    if view["lineage"]:
        parts.append(tables.section("initialised from", _edges(view["lineage"])))
    return {**view, "_human": "\n\n".join(parts)}


def _evaluations(rows: list[dict[str, Any]]) -> str:
    return tables.table(
        ("id", "version", "position", "method", "metric", "value", "n", "when"),
        (
            (e["id"], e["prefix_version"], e["position"], e["method"], e["metric"], e["value"],
             e["n"], e["created_at"])
            for e in rows
        ),
    )  # fmt: skip


def _edges(rows: list[dict[str, Any]]) -> str:
    return tables.table(
        ("depth", "prefix", "source", "weight", "method"),
        (
            (e["depth"], f"{e['task']} v{e['version']}",
             f"{e['source_task']} v{e['source_version']}", e["weight"], e["method"])
            for e in rows
        ),
    )  # fmt: skip


def cmd_history(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        rows = [e.to_dict() for e in reg.history(a.task)]
    text = _evaluations(rows) if rows else f"task {a.task} has no evaluations yet"
    return {"task": a.task, "evaluations": rows, "_human": text}


def cmd_lineage(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        edges = [e.to_dict() for e in reg.lineage(a.task, version=a.version)]
    text = _edges(edges) if edges else f"task {a.task}'s prefix started from no earlier prefix"
    return {"task": a.task, "lineage": edges, "_human": text}


def cmd_export(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        return reg.export(a.task, a.fmt, Path(a.out), version=a.version).to_dict()


def cmd_import(a: argparse.Namespace) -> dict[str, Any]:
    from continual.backbones import load_backbone
    from pipelines.importing import import_folder, task_from_flags

    task = task_from_flags(a.name, a.kind, a.labels, a.description)
    backbone = load_backbone(a.backbone) if a.backbone else None
    with _open(a) as reg:
        record = import_folder(reg, Path(a.dir), backbone=backbone, task=task,
                               fingerprint=a.backbone_fingerprint, new_version=a.new_version)  # fmt: skip
    return {"imported": record.to_dict()}


def cmd_check(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        result = reg.check(repair=a.repair, mlflow=a.mlflow).to_dict()
    if not result["ok"]:
        result["_exit_code"] = 1
    return {**result, "_human": check_text(result)}


def check_text(r: dict[str, Any]) -> str:
    """`registry check` for people: one line per problem, then what was done and the verdict."""
    from pipelines.cli_jobs import render_table

    rows = [(kind, p["kind"], f"{p['task']} v{p['version']}" if p["version"] else p["task"],
             p["path"]) for kind in ("missing", "corrupt") for p in r[kind]]  # fmt: skip
    rows += [("orphan", "file", "", f) for f in r["orphans"]]
    rows += [("mlflow", "run", f"{p['task']} v{p['version']}" if p["version"] else "",
              p["problem"]) for p in r["mlflow"]]  # fmt: skip
    head = f"checked {r['checked_files']} files"
    if r["mlflow_checked"] is not None:
        head += f" and {r['mlflow_checked']} MLflow runs"
    out = [head]
    if rows:
        out.append(render_table(("problem", "kind", "task", "where"), rows))
    done = [(r["removed"], "orphan files removed"), (r["marked_broken"], "prefixes marked broken"),
            (r["dropped_optimizer"], "optimizer states dropped"), (r["restored"], "prefixes restored"),
            (r["remirrored"], "MLflow copies rebuilt")]  # fmt: skip
    out += [f"repair: {len(ids)} {what}" for ids, what in done if ids]
    if r["recent_orphans"]:
        out.append(f"{len(r['recent_orphans'])} unreferenced files are recent (a write in flight?): left alone")  # fmt: skip
    if r["ok"]:
        out.append("ok")
    else:
        out.append("problems found" + ("" if r["repaired"] else ": `--repair` fixes what it can"))
    return "\n".join(out)


def cmd_similar(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.similar_cmd import run_similar
    from tasks.load import DataArgs

    return run_similar(
        registry=_args(a),
        task=a.task,
        data_args=DataArgs(
            train=a.train,
            kind=a.kind,
            text_field=a.text_field,
            target_field=a.target_field or "",
        ),
        backbone=a.backbone,
        method=a.method,
        top=a.top,
    )


def cmd_sync_mlflow(a: argparse.Namespace) -> dict[str, Any]:
    with _open(a) as reg:
        result = reg.sync_mlflow().to_dict()
    if result["failed"]:
        result["_exit_code"] = 1
    return result


def cmd_upgrade(a: argparse.Namespace) -> dict[str, Any]:
    from registry import upgrade

    where = _args(a)
    return upgrade(where.home, url=where.url)
