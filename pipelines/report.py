"""The continual-learning report of a workspace: report.json, report.md and report.html.

Everything comes from the registry (scores, hashes, prefixes, lineage) and the backbone
fingerprints kept by the orchestrator under `<home>/stream/evidence/`; nothing is loaded or
computed again, so `continual report` is quick and can run any time.

report.json holds, under `methods.<name>` (`prefix` for ours), `R` (T x T, null where
undefined), `acc`, `bwt`, `fwt`, `forgetting_max` and `forgetting_last` (see
`continual.metrics` for which paper each comes from), beside the stream, storage, lineage and
the no-forgetting evidence (`evidence.ok` is false on any mismatch).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from continual import metrics
from pipelines import ledger
from registry import Registry

FORMAT = "continual-report/1"
METRIC_NAMES = {
    "acc": "ACC: mean of the last row of R",
    "bwt": "BWT (GEM, Lopez-Paz & Ranzato 2017): mean of R[T-1][j] - R[j][j] over j < T-1",
    "fwt": "FWT (GEM): mean over j >= 1 of the untrained starting point's score minus a "
    "randomly initialised one's, at task j's arrival",
    "forgetting_max": "Forgetting (Chaudhry et al. 2018): mean of max_{l<T-1} R[l][j] - "
    "R[T-1][j] over j < T-1",
    "forgetting_last": "Forgetting (Avalanche): mean of R[j][j] - R[T-1][j] over j < T-1",
}
COLUMNS = (
    ("acc", "ACC"),
    ("bwt", "BWT"),
    ("fwt", "FWT"),
    ("forgetting_max", "Forget max (Chaudhry)"),
    ("forgetting_last", "Forget first-last (Avalanche)"),
)


def build(reg: Registry) -> dict[str, Any]:
    """The report as one JSON-able document."""
    home = reg.workspace
    stream = ledger.read_stream(reg)
    tasks: list[str] = stream["tasks"]
    evaluations = stream["evaluations"]
    methods = {}
    for name, view in stream["views"].items():
        methods[name] = {
            "arrivals": len(view.tasks),
            "tasks": list(view.tasks),
            "R": metrics.lower_triangle(view.R),
            "untrained_init": view.init,
            "untrained_random": view.random,
            **metrics.summary(view.R, view.init, view.random),
        }
    rows = [_task_row(reg, p, t, evaluations[t]) for p, t in enumerate(tasks)]
    backbone = _backbone(reg, rows)
    return {
        "format": FORMAT,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workspace": str(home),
        "backbone": backbone,
        "tasks": rows,
        "methods": methods,
        "metric_definitions": METRIC_NAMES,
        "evidence": _evidence(home, tasks, stream["views"].get(ledger.PREFIX), backbone),
        "task_agnostic": task_agnostic(tasks, evaluations, methods.get(ledger.PREFIX)),
        "in_progress": [
            {"method": a.method, "position": a.position, "task": a.task, "status": a.status}
            for a in reg.arrivals(None)
            if a.status != "done"
        ],
    }


def task_agnostic(
    tasks: list[str], evaluations: dict[str, list], prefix: dict[str, Any] | None
) -> dict[str, Any]:
    """The prefixes when the task is not given: per arrival i, the routing accuracy over every
    eval input of tasks 0..i, the end-to-end score (mean over those tasks, each input answered
    by the prefix it was routed to) and the same mean with the task given (the prefix's R)."""
    T = prefix["arrivals"] if prefix else 0
    routed = ledger.method_view(ledger.ROUTED, tasks, evaluations, T)
    per_arrival = []
    for i in range(T):
        found = [ledger.find(evaluations[t], ledger.ROUTING, i) for t in tasks[: i + 1]]
        ends = routed.R[i][: i + 1]
        given = prefix["R"][i][: i + 1]
        if any(e is None for e in found) or any(x is None for x in ends):
            per_arrival.append({"position": i, "tasks": i + 1, "recorded": False})
            continue
        n = sum(e.n for e in found)
        per_arrival.append(
            {
                "position": i,
                "tasks": i + 1,
                "recorded": True,
                "n": n,
                "routing_accuracy": sum(e.value * e.n for e in found) / n,
                "coverage": 1.0,
                "end_to_end": sum(ends) / len(ends),
                "task_given": sum(given) / len(given) if None not in given else None,
            }
        )
    return {
        "R": metrics.lower_triangle(routed.R),
        "per_arrival": per_arrival,
        "routing_per_task": {
            t: [e.value for e in evaluations[t] if e.method == ledger.ROUTING] for t in tasks
        },
        "note": "every input is answered (no reject option): coverage 100%",
    }


def task_agnostic_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for a in doc["task_agnostic"]["per_arrival"]:
        if not a["recorded"]:
            rows.append([str(a["position"]), str(a["tasks"]), "–", "–", "–", "–"])
            continue
        given = a["task_given"]
        rows.append(
            [
                str(a["position"]),
                str(a["tasks"]),
                pct(a["routing_accuracy"]),
                pct(a["end_to_end"]),
                pct(given),
                pct(None if given is None else a["end_to_end"] - given, signed=True),
            ]
        )
    return rows


TASK_AGNOSTIC_HEAD = [
    "after arrival",
    "tasks",
    "routing accuracy",
    "score, task inferred",
    "score, task given",
    "difference",
]


def _task_row(reg: Registry, position: int, task: str, evaluations: list) -> dict[str, Any]:
    own = ledger.find(evaluations, ledger.PREFIX, position)
    record = reg.prefix(own.prefix_id) if own is not None and own.prefix_id else None
    view = reg.show(task)
    arrival = next(
        (a for a in ledger.done_arrivals(reg, ledger.PREFIX) if a.position == position), None
    )
    run = reg.run(record.run_id).config if record is not None and record.run_id else {}
    return {
        "position": position,
        "task": task,
        "kind": view.task.kind,
        "metric": own.metric if own else None,
        "n_eval": own.n if own else None,
        "arrived_at": arrival.finished_at.isoformat() if arrival and arrival.finished_at else None,
        "prefix_id": record.id if record else None,
        "prefix_version": record.version if record else None,
        "prefix_sha256": record.sha256 if record else None,
        "stored_bytes": record.n_bytes if record else None,
        "stored_params": record.n_stored if record else None,
        "init": (record.config.get("init") if record else None) or "random",
        "init_strategy": run.get("init", {}).get("strategy")
        or (record.config.get("init") if record else None)
        or "random",
        "lineage": [e.to_dict() for e in reg.lineage(task)] if record else [],
        "backbone_fingerprint": record.backbone_fingerprint if record else None,
        "backbone_name": record.backbone_name if record else None,
        "backbone_bytes": run.get("stream", {}).get("backbone_bytes"),
        "train_steps": record.train.steps if record else None,
        "train_seconds": record.train.seconds if record else None,
    }


def _backbone(reg: Registry, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"name": None, "fingerprint": None, "bytes": None}
    first = rows[0]
    return {
        "name": first["backbone_name"],
        "fingerprint": first["backbone_fingerprint"],
        "bytes": first["backbone_bytes"],
    }


def _evidence(
    home: Path, tasks: list[str], view: ledger.MethodView | None, backbone: dict[str, Any]
) -> dict[str, Any]:
    """The backbone fingerprint measured after every arrival, and every re-evaluation's
    predictions hash against the one at the task's own arrival."""
    fingerprints = []
    for p, task in enumerate(tasks):
        path = home / "stream" / "evidence" / f"{p:04d}.json"
        doc = json.loads(path.read_text()) if path.exists() else {}
        measured = doc.get("fingerprint_after_arrival")
        fingerprints.append(
            {
                "position": p,
                "task": task,
                "fingerprint": measured,
                "equal": measured == backbone["fingerprint"] if measured else None,
            }
        )
    predictions, mismatches = [], []
    if view is not None:
        for j, task in enumerate(view.tasks):
            own = view.sha[j][j]
            for i in range(j, len(view.tasks)):
                sha = view.sha[i][j]
                row = {
                    "task": task,
                    "position": i,
                    "sha256": sha,
                    "arrival_sha256": own,
                    "equal": sha is not None and sha == own,
                    "score": view.R[i][j],
                }
                predictions.append(row)
                if not row["equal"]:
                    mismatches.append(row)
    bad_fp = [f for f in fingerprints if f["equal"] is False]
    return {
        "ok": not mismatches and not bad_fp,
        "backbone": fingerprints,
        "predictions": predictions,
        "mismatches": mismatches,
        "backbone_changes": bad_fp,
    }


# --- text ---------------------------------------------------------------------------------------


def pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def metrics_table(doc: dict[str, Any]) -> str:
    """The metrics of every method as a fixed-width text table (scores in %, transfer in points)."""
    head = ["method", "tasks"] + [label for _, label in COLUMNS]
    lines = []
    for name, m in doc["methods"].items():
        cells = [name, str(m["arrivals"])]
        cells += [pct(m[k], signed=k != "acc") for k, _ in COLUMNS]
        lines.append(cells)
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def matrix_rows(doc: dict[str, Any], method: str) -> tuple[list[str], list[list[str]]]:
    m = doc["methods"][method]
    head = ["after ↓ / task →"] + m["tasks"]
    rows = [[f"{i}: {m['tasks'][i]}"] + [pct(x) for x in row] for i, row in enumerate(m["R"])]
    return head, rows


def markdown(doc: dict[str, Any]) -> str:
    ev = doc["evidence"]
    bb = doc["backbone"]
    parts = [
        "# Continual-learning report",
        "",
        f"Workspace `{doc['workspace']}` · backbone **{bb['name']}** "
        f"(fingerprint `{(bb['fingerprint'] or '')[:16]}…`) · {len(doc['tasks'])} arrival(s) · "
        f"generated {doc['generated_at']}",
        "",
    ]
    if not ev["ok"]:
        parts += [
            "> **⚠ MISMATCH — the no-forgetting evidence does not hold:** "
            f"{len(ev['mismatches'])} re-evaluation(s) differ from the task's own arrival, "
            f"{len(ev['backbone_changes'])} backbone fingerprint change(s). See below.",
            "",
        ]
    parts += ["## Metrics", "", "Scores in %, transfer and forgetting in points.", ""]
    rows = [
        [name, str(m["arrivals"])] + [pct(m[k], signed=k != "acc") for k, _ in COLUMNS]
        for name, m in doc["methods"].items()
    ]
    parts += [_md_table(["method", "tasks"] + [label for _, label in COLUMNS], rows), ""]
    parts += [f"- **{k}**: {v}" for k, v in doc["metric_definitions"].items()] + [""]
    parts += ["## Accuracy matrices", "", "R[i][j]: score on task j after arrival i.", ""]
    for name in doc["methods"]:
        head, rows = matrix_rows(doc, name)
        parts += [f"### {name}", "", _md_table(head, rows), ""]
    parts += [
        "## Task-agnostic: the task inferred, not given",
        "",
        "Every eval input of the tasks so far is routed to a task by its frozen features "
        "(`continual predict --auto`) and answered by that task's prefix. Routing accuracy "
        "counts every input (no reject option: coverage 100%); scores are the mean over tasks, "
        "each on its own metric. Unlike the prefixes themselves, routing can degrade as tasks "
        "accumulate.",
        "",
        _md_table(TASK_AGNOSTIC_HEAD, task_agnostic_rows(doc)),
        "",
    ]
    parts += ["## Stream", ""]
    parts += [
        _md_table(
            ["position", "task", "kind", "metric", "eval examples", "steps", "arrived"],
            [
                [
                    str(t["position"]),
                    t["task"],
                    t["kind"],
                    str(t["metric"]),
                    str(t["n_eval"]),
                    str(t["train_steps"]),
                    str(t["arrived_at"]),
                ]
                for t in doc["tasks"]
            ],
        ),
        "",
    ]
    parts += ["## Stored bytes per task", ""]
    parts += [_md_table(["task", "stored params", "stored bytes", "of the backbone"], storage(doc))]
    parts += [f"\nBackbone: {_bytes(bb['bytes'])}, stored once for every task.", ""]
    parts += ["## Initialization lineage", ""]
    parts += [_md_table(["task", "init", "initialised from"], lineage_rows(doc)), ""]
    parts += ["## No-forgetting evidence", "", "Backbone fingerprint after every arrival:", ""]
    parts += [_md_table(["position", "task", "fingerprint", "equal to load"], fp_rows(doc)), ""]
    parts += ["Predictions sha256 of every re-evaluation against the task's own arrival:", ""]
    parts += [_md_table(["task", "position", "sha256", "score", "matches arrival"], sha_rows(doc))]
    if doc["in_progress"]:
        parts += ["", "## In progress", ""]
        parts += [
            f"- {a['method']} at position {a['position']}: {a['task']} ({a['status']})"
            for a in doc["in_progress"]
        ]
    return "\n".join(parts) + "\n"


def storage(doc: dict[str, Any]) -> list[list[str]]:
    total = doc["backbone"]["bytes"]
    return [
        [
            t["task"],
            f"{t['stored_params']:,}" if t["stored_params"] else "–",
            _bytes(t["stored_bytes"]),
            f"{100 * t['stored_bytes'] / total:.2f}%" if total and t["stored_bytes"] else "–",
        ]
        for t in doc["tasks"]
    ]


def lineage_rows(doc: dict[str, Any]) -> list[list[str]]:
    out = []
    for t in doc["tasks"]:
        sources = ", ".join(
            f"{e['source_task']} v{e['source_version']} ({e['method']}, w={e['weight']:.2f})"
            for e in t["lineage"]
        )
        init = t["init"]
        if t.get("init_strategy") and t["init_strategy"] != init:
            init = f"{init} → {t['init_strategy']}"
        out.append([t["task"], init, sources or "– (no earlier prefix)"])
    return out


def fp_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [
        [
            str(f["position"]),
            f["task"],
            f"`{f['fingerprint'][:16]}…`" if f["fingerprint"] else "not measured",
            {True: "yes", False: "**NO — MISMATCH**", None: "–"}[f["equal"]],
        ]
        for f in doc["evidence"]["backbone"]
    ]


def sha_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [
        [
            p["task"],
            str(p["position"]),
            f"`{p['sha256'][:16]}…`" if p["sha256"] else "missing",
            pct(p["score"]),
            "yes" if p["equal"] else "**NO — MISMATCH**",
        ]
        for p in doc["evidence"]["predictions"]
    ]


def _bytes(n: int | None) -> str:
    if not n:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


# --- writing ------------------------------------------------------------------------------------


def write_report(reg: Registry, out: Path | None = None) -> dict[str, Any]:
    """Write report.json, report.md and report.html into `out` (default `<home>/report`),
    each atomically; returns where they are, the metrics and whether the evidence holds."""
    from pipelines.report_html import html

    out = Path(out) if out is not None else reg.workspace / "report"
    out.mkdir(parents=True, exist_ok=True)
    doc = build(reg)
    files = {
        "json": ("report.json", json.dumps(doc, indent=1, sort_keys=True)),
        "md": ("report.md", markdown(doc)),
        "html": ("report.html", html(doc)),
    }
    paths = {}
    for key, (name, text) in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
        paths[key] = str(out / name)
    return {
        "dir": str(out),
        **paths,
        "ok": doc["evidence"]["ok"],
        "metrics": {
            name: {k: m[k] for k, _ in COLUMNS} | {"tasks": m["arrivals"]}
            for name, m in doc["methods"].items()
        },
        "table": metrics_table(doc),
    }
