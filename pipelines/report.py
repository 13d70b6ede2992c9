"""The continual-learning report of one stream: report.json, report.md and report.html
(rendered by `report_md` and `report_html`).

Everything comes from the registry (scores, hashes, prefixes, lineage) and the backbone
fingerprints each arrival keeps under `<stream home>/stream/evidence/`; nothing is loaded or
computed again, so `continual report` is quick and can run any time. The stream's scores and
arrivals are read in a fixed number of queries, whatever its length.

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
from pipelines.report_md import COLUMNS, markdown, metrics_table
from pipelines.settings import stream_home
from registry import ArrivalRecord, EvaluationRecord, Registry
from registry.streams import DEFAULT_STREAM

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


def build(reg: Registry, stream_name: str = DEFAULT_STREAM) -> dict[str, Any]:
    """The report of stream `stream_name` as one JSON-able document."""
    home = stream_home(reg.workspace, stream_name)
    stream = ledger.read_stream(reg, stream_name)
    tasks: list[str] = stream["tasks"]
    evaluations = stream["evaluations"]
    methods = {}
    for name, view in stream["views"].items():
        methods[name] = {
            "arrivals": len(view.tasks),
            "tasks": list(view.tasks),
            "R": metrics.lower_triangle(view.R),
            # which cells a proof carried (`--reeval audit|proof`); absent when all were measured
            **({"carried": view.carried} if view.carried else {}),
            "untrained_init": view.init,
            "untrained_random": view.random,
            **metrics.summary(view.R, view.init, view.random),
        }
    done = {
        a.position: a
        for a in stream["arrivals"]
        if a.method == ledger.PREFIX and a.status == "done"
    }
    own = {t: ledger.find(evaluations[t], ledger.PREFIX, p) for p, t in enumerate(tasks)}
    batch = _Batch(reg, tasks, [e.prefix_id for e in own.values() if e and e.prefix_id])
    rows = [batch.row(p, t, own[t], done.get(p)) for p, t in enumerate(tasks)]
    backbone = _backbone(reg, rows)
    return {
        "format": FORMAT,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workspace": str(reg.workspace),
        "stream": stream_name,
        "backbone": backbone,
        "tasks": rows,
        "methods": methods,
        "metric_definitions": METRIC_NAMES,
        "evidence": _evidence(home, tasks, stream["views"].get(ledger.PREFIX), backbone),
        "task_agnostic": task_agnostic(
            tasks,
            evaluations,
            methods.get(ledger.PREFIX),
            [done[p].reeval is not None if p in done else False for p in range(len(tasks))],
        ),
        "in_progress": [
            {"method": a.method, "position": a.position, "task": a.task, "status": a.status}
            for a in stream["arrivals"]
            if a.status != "done"
        ],
    }


def task_agnostic(
    tasks: list[str],
    evaluations: dict[str, list],
    prefix: dict[str, Any] | None,
    sampled: list[bool] | None = None,
) -> dict[str, Any]:
    """The prefixes when the task is not given: per arrival i, the routing accuracy over every
    eval input of tasks 0..i, the end-to-end score (mean over those tasks, each input answered
    by the prefix it was routed to) and the same mean with the task given (the prefix's R).
    An arrival that re-scored a sample (`sampled[i]`, `--reeval audit|proof`) routes the
    sample's inputs among all tasks 0..i: its means are over the sample (`evaluated` tasks)."""
    T = prefix["arrivals"] if prefix else 0
    routed = ledger.method_view(ledger.ROUTED, tasks, evaluations, T)
    per_arrival = []
    for i in range(T):
        found = [ledger.find(evaluations[t], ledger.ROUTING, i) for t in tasks[: i + 1]]
        ends = routed.R[i][: i + 1]
        given = prefix["R"][i][: i + 1]
        keep = [j for j in range(i + 1) if found[j] is not None and ends[j] is not None]
        partial = len(keep) < i + 1
        if not keep or (partial and not (sampled and i < len(sampled) and sampled[i])):
            per_arrival.append({"position": i, "tasks": i + 1, "recorded": False})
            continue
        n = sum(found[j].n for j in keep)  # type: ignore[union-attr]
        mean_given = [given[j] for j in keep]
        per_arrival.append(
            {
                "position": i,
                "tasks": i + 1,
                **({"evaluated": len(keep)} if partial else {}),  # a sample (audit|proof)
                "recorded": True,
                "n": n,
                "routing_accuracy": sum(found[j].value * found[j].n for j in keep) / n,  # type: ignore[union-attr]
                "coverage": 1.0,
                "end_to_end": sum(ends[j] for j in keep) / len(keep),  # type: ignore[misc]
                "task_given": (
                    sum(mean_given) / len(keep) if None not in mean_given else None  # type: ignore[arg-type]
                ),
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


class _Batch:
    """What the task rows need, read for all tasks at once: a fixed number of queries, whatever
    the stream's length (the report is refreshed after every arrival)."""

    def __init__(self, reg: Registry, tasks: list[str], prefix_ids: list[int]) -> None:
        self.tasks = reg.tasks_named(tasks)
        self.prefixes = reg.prefixes_by_id(prefix_ids)
        self.runs = reg.runs_by_id(p.run_id for p in self.prefixes.values() if p.run_id)
        current = reg.current_prefixes(tasks)
        self.current = {t: p.id for t, p in current.items()}
        self.lineage = reg.lineages(self.current.values())

    def row(
        self, position: int, task: str, own: EvaluationRecord | None, arrival: ArrivalRecord | None
    ) -> dict[str, Any]:
        record = self.prefixes.get(own.prefix_id) if own is not None and own.prefix_id else None
        run = self.runs[record.run_id].config if record is not None and record.run_id else {}
        lineage = self.lineage.get(self.current.get(task, -1), [])
        return {
            "position": position,
            "task": task,
            "kind": self.tasks[task].kind,
            "metric": own.metric if own else None,
            "n_eval": own.n if own else None,
            "arrived_at": (
                arrival.finished_at.isoformat() if arrival and arrival.finished_at else None
            ),
            "prefix_id": record.id if record else None,
            "prefix_version": record.version if record else None,
            "prefix_sha256": record.sha256 if record else None,
            "stored_bytes": record.n_bytes if record else None,
            "stored_params": record.n_stored if record else None,
            "init": (record.config.get("init") if record else None) or "random",
            "init_strategy": run.get("init", {}).get("strategy")
            or (record.config.get("init") if record else None)
            or "random",
            "lineage": [e.to_dict() for e in lineage] if record else [],
            "backbone_fingerprint": record.backbone_fingerprint if record else None,
            "backbone_name": record.backbone_name if record else None,
            "backbone_bytes": run.get("stream", {}).get("backbone_bytes"),
            "train_steps": record.train.steps if record else None,
            "train_seconds": record.train.seconds if record else None,
            # a module of another kind than the prefix only: a prefix's row keeps its keys
            **({"module": record.kind} if record and record.kind not in (None, "prefix") else {}),
            # a searched task only (`--tune`): every other report keeps its keys
            **(
                {
                    "prefix_length": record.config.get("length"),
                    "lr": run.get("train", {}).get("lr"),
                    "tune": _search(run["tune"]),
                }
                if record is not None and run.get("tune")
                else {}
            ),
        }


def _search(found: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of a task's search (`--tune`): the winner and the cost."""
    if not found:
        return None
    return {
        "trials": len(found["trials"]),
        "pruned": found.get("pruned", 0),
        "steps": found["steps"],
        "refit_steps": found.get("refit_steps", 0),
        "best": found["best"]["params"],
        "validation": found["best"]["value"],
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
    predictions hash against the one at the task's own arrival.

    Arrivals that ran off the bitwise-reproducible runtime (a GPU, another dtype: recorded in
    their evidence) may change a prediction on a near-tie input: there a different hash whose
    score is within `SCORE_TOLERANCE` of the arrival's is reported as such, not as a mismatch.
    """
    from continual.runtime import SCORE_TOLERANCE

    fingerprints, exact = [], []
    for p, task in enumerate(tasks):
        path = home / "stream" / "evidence" / f"{p:04d}.json"
        doc = json.loads(path.read_text()) if path.exists() else {}
        rt = doc.get("runtime") or {"device": "cpu", "dtype": "float32"}
        exact.append(rt.get("device") == "cpu" and rt.get("dtype") == "float32")
        measured = doc.get("fingerprint_after_arrival")
        fingerprints.append(
            {
                "position": p,
                "task": task,
                "fingerprint": measured,
                "equal": measured == backbone["fingerprint"] if measured else None,
                "runtime": rt,
            }
        )
    predictions, mismatches = [], []
    if view is not None:
        for j, task in enumerate(view.tasks):
            own = view.sha[j][j]
            for i in range(j, len(view.tasks)):
                if view.carried and view.carried[i][j]:
                    continue  # not re-evaluated: carried by the arrival's proof
                sha = view.sha[i][j]
                row = {
                    "task": task,
                    "position": i,
                    "sha256": sha,
                    "arrival_sha256": own,
                    "equal": sha is not None and sha == own,
                    "score": view.R[i][j],
                }
                inexact = not (exact[i] and exact[j]) if i < len(exact) else False
                if not row["equal"] and inexact and view.R[i][j] is not None:
                    close = abs(view.R[i][j] - view.R[j][j]) <= SCORE_TOLERANCE
                    row["within_tolerance"] = close
                predictions.append(row)
                if not row["equal"] and not row.get("within_tolerance"):
                    mismatches.append(row)
    bad_fp = [f for f in fingerprints if f["equal"] is False]
    return {
        "ok": not mismatches and not bad_fp,
        "score_tolerance": SCORE_TOLERANCE if not all(exact) else None,
        "backbone": fingerprints,
        "predictions": predictions,
        "mismatches": mismatches,
        "backbone_changes": bad_fp,
    }


# --- text ---------------------------------------------------------------------------------------


# --- writing ------------------------------------------------------------------------------------


def write_report(
    reg: Registry, out: Path | None = None, stream: str = DEFAULT_STREAM
) -> dict[str, Any]:
    """Write the stream's report.json, report.md and report.html into `out` (default
    `<stream home>/report`: `<home>/report` for `default`), each atomically; returns where
    they are, the metrics and whether the evidence holds."""
    from pipelines.report_html import html

    out = Path(out) if out is not None else stream_home(reg.workspace, stream) / "report"
    out.mkdir(parents=True, exist_ok=True)
    doc = build(reg, stream)
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
        "stream": stream,
        "dir": str(out),
        **paths,
        "ok": doc["evidence"]["ok"],
        "metrics": {
            name: {k: m[k] for k, _ in COLUMNS} | {"tasks": m["arrivals"]}
            for name, m in doc["methods"].items()
        },
        "table": metrics_table(doc),
    }
