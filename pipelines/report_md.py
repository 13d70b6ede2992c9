"""The report rendered as Markdown, and the tables the Markdown and HTML renderings share."""

from __future__ import annotations

from typing import Any

from continual.routing import ROUTE_RIDGE_FROM

COLUMNS = (
    ("acc", "ACC"),
    ("bwt", "BWT"),
    ("fwt", "FWT"),
    ("forgetting_max", "Forget max (Chaudhry)"),
    ("forgetting_last", "Forget first-last (Avalanche)"),
)


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
    carried = m.get("carried") or [[False] * len(row) for row in m["R"]]
    rows = [
        [f"{i}: {m['tasks'][i]}"] + [pct(x) + (f" {CARRIED}" if c else "") for x, c in zip(row, cs)]
        for i, (row, cs) in enumerate(zip(m["R"], carried))
    ]
    return head, rows


CARRIED = "≡"
CARRIED_NOTE = (
    f"{CARRIED}: carried by proof, not re-scored: at that arrival the backbone's fingerprint and "
    "the module's sha256 were verified equal to those of the score above it (`--reeval "
    "audit|proof`; `--reeval full` re-scores every cell)."
)


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
    for name, m in doc["methods"].items():
        head, rows = matrix_rows(doc, name)
        parts += [f"### {name}", "", _md_table(head, rows), ""]
        parts += [CARRIED_NOTE, ""] if m.get("carried") else []
    parts += [
        "## Task-agnostic: the task inferred, not given",
        "",
        "Every eval input of the tasks so far is routed to a task by its frozen features "
        "(`continual predict --auto`) and answered by that task's prefix. Routing accuracy "
        "counts every input (no reject option: coverage 100%); scores are the mean over tasks, "
        "each on its own metric. Unlike the prefixes themselves, routing can degrade as tasks "
        f"accumulate. The router is a logistic regression up to {ROUTE_RIDGE_FROM - 1} tasks and the "
        f"closed-form ridge router from {ROUTE_RIDGE_FROM} on (`continual.routing`).",
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
    if any(t.get("tune") for t in doc["tasks"]):
        parts += ["## Searched options (`--tune`)", ""]
        parts += [_md_table(TUNE_HEAD, tune_rows(doc)), ""]
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


TUNE_HEAD = ["task", "P", "lr", "width", "start", "validation", "trials (pruned)", "search steps"]


def tune_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Each searched task's chosen options and what the search cost."""
    out = []
    for t in doc["tasks"]:
        found = t.get("tune")
        if not found:
            continue
        best = found["best"]
        out.append(
            [
                t["task"],
                str(best["prefix_length"]),
                f"{best['lr']:.2g}",
                str(best["reparam_hidden"]),
                best["init"],
                f"{found['validation']:.4f}",
                f"{found['trials']} ({found['pruned']})",
                f"{found['steps']:,}"
                + (f" + {found['refit_steps']:,} refit" if found.get("refit_steps") else ""),
            ]
        )
    return out


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
