"""report.html: one self-contained page, its plots embedded as base64 PNG (matplotlib, Agg).

Plots: the accuracy matrix of every method as heatmaps side by side; each task's score over the
arrivals, one line per method; the bytes stored per task against the backbone's.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
from typing import Any

from continual.routing import ROUTE_RIDGE_FROM
from pipelines.report_md import (
    CARRIED_NOTE,
    COLUMNS,
    TASK_AGNOSTIC_HEAD,
    TUNE_HEAD,
    fp_rows,
    lineage_rows,
    matrix_rows,
    pct,
    sha_rows,
    storage,
    task_agnostic_rows,
    tune_rows,
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:14px}
td:first-child,th:first-child{text-align:left}
.alarm{background:#c00;color:#fff;padding:1em;font-size:20px;font-weight:bold}
.ok{background:#e6f4ea;padding:.6em;border-left:6px solid #2a7}
.bad{color:#c00;font-weight:bold}
img{max-width:100%;border:1px solid #eee}
code{font-size:13px}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def heatmaps(doc: dict[str, Any]) -> str | None:
    methods = doc["methods"]
    if not methods:
        return None
    plt = _plt()
    n = len(methods)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 1.6, 4.2), squeeze=False)
    for k, (ax, (name, m)) in enumerate(zip(axes[0], methods.items())):
        T = len(m["R"])
        grid = [[math.nan if x is None else 100 * x for x in row] for row in m["R"]]
        im = ax.imshow(grid or [[math.nan]], vmin=0, vmax=100, cmap="viridis")
        for i in range(T):
            for j in range(T):
                if m["R"][i][j] is not None:
                    v = 100 * m["R"][i][j]
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8,
                            color="white" if v < 60 else "black")  # fmt: skip
        ax.set_title(f"{name}: ACC {pct(m['acc'])}, BWT {pct(m['bwt'], True)}")
        ax.set_xticks(range(T), m["tasks"], rotation=45, ha="right", fontsize=8)
        # Rows are the same arrivals for every method: name them once, on the left.
        ax.set_yticks(range(T), [f"after {t}" for t in m["tasks"]] if k == 0 else [], fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="score %")
    return _png(fig)


def task_lines(doc: dict[str, Any]) -> str | None:
    tasks = [t["task"] for t in doc["tasks"]]
    if not tasks:
        return None
    plt = _plt()
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for k, task in enumerate(tasks):
        ax = axes[k // cols][k % cols]
        for name, m in doc["methods"].items():
            if task not in m["tasks"]:
                continue
            j = m["tasks"].index(task)
            xs = [i for i in range(j, len(m["R"])) if m["R"][i][j] is not None]
            ax.plot(xs, [100 * m["R"][i][j] for i in xs], marker="o", label=name)
        ax.set_title(task, fontsize=10)
        ax.set_xlim(-0.3, len(tasks) - 0.7)
        ax.set_xticks(range(len(tasks)))
        ax.set_xlabel("after arrival", fontsize=8)
        ax.set_ylabel("score %", fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(len(tasks), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def storage_bars(doc: dict[str, Any]) -> str | None:
    tasks = [t for t in doc["tasks"] if t["stored_bytes"]]
    total = doc["backbone"]["bytes"]
    if not tasks:
        return None
    plt = _plt()
    names = [t["task"] for t in tasks] + (["backbone"] if total else [])
    values = [t["stored_bytes"] for t in tasks] + ([total] if total else [])
    colors = ["#4c72b0"] * len(tasks) + (["#c44e52"] if total else [])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(names, values, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("bytes stored (log scale)")
    ax.invert_yaxis()
    fig.tight_layout()
    return _png(fig)


def _table(head: list[str], rows: list[list[str]]) -> str:
    def cell(tag: str, text: str) -> str:
        body = _html.escape(text.replace("`", "").replace("**", ""))
        cls = ' class="bad"' if "MISMATCH" in text else ""
        return f"<{tag}{cls}>{body}</{tag}>"

    out = ["<table><tr>" + "".join(cell("th", h) for h in head) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", c) for c in r) + "</tr>" for r in rows]
    return "".join(out) + "</table>"


def _img(src: str | None, alt: str) -> str:
    return f'<p><img alt="{_html.escape(alt)}" src="{src}"></p>' if src else ""


def html(doc: dict[str, Any]) -> str:
    ev, bb = doc["evidence"], doc["backbone"]
    e = _html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>Continual-learning report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Continual-learning report</h1>",
        f"<p>Workspace <code>{e(doc['workspace'])}</code> · backbone <b>{e(str(bb['name']))}</b>"
        f" (fingerprint <code>{e((bb['fingerprint'] or '')[:16])}…</code>) · "
        f"{len(doc['tasks'])} arrival(s) · generated {e(doc['generated_at'])}</p>",
    ]
    if ev["ok"]:
        parts.append(
            "<p class='ok'>No-forgetting evidence holds: the backbone fingerprint never changed "
            "and every re-evaluation reproduced its task's predictions exactly.</p>"
        )
    else:
        parts.append(
            f"<div class='alarm'>⚠ MISMATCH: {len(ev['mismatches'])} re-evaluation(s) differ "
            f"from the task's own arrival; {len(ev['backbone_changes'])} backbone fingerprint "
            "change(s). The no-forgetting evidence does not hold.</div>"
        )
    rows = [
        [name, str(m["arrivals"])] + [pct(m[k], signed=k != "acc") for k, _ in COLUMNS]
        for name, m in doc["methods"].items()
    ]
    parts += [
        "<h2>Metrics</h2><p>Scores in %, transfer and forgetting in points.</p>",
        _table(["method", "tasks"] + [label for _, label in COLUMNS], rows),
        "<ul>"
        + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in doc["metric_definitions"].items())
        + "</ul>",  # fmt: skip
        "<h2>Accuracy matrices</h2><p>R[i][j]: score on task j after arrival i.</p>",
        _img(heatmaps(doc), "accuracy matrix heatmaps"),
    ]
    for name, m in doc["methods"].items():
        head, rows = matrix_rows(doc, name)
        parts += [f"<h3>{e(name)}</h3>", _table(head, rows)]
        parts += [f"<p class='note'>{e(CARRIED_NOTE)}</p>"] if m.get("carried") else []
    parts += [
        "<h2>Each task over the stream</h2>",
        _img(task_lines(doc), "score of each task after every arrival"),
        "<h2>Task-agnostic: the task inferred, not given</h2><p>Every eval input of the tasks so "
        "far is routed by its frozen features and answered by that task's prefix; routing "
        "accuracy counts every input (no reject option: coverage 100%). The router is a "
        f"logistic regression up to {ROUTE_RIDGE_FROM - 1} tasks and the closed-form ridge router "
        f"from {ROUTE_RIDGE_FROM} on.</p>",
        _table(TASK_AGNOSTIC_HEAD, task_agnostic_rows(doc)),
        *(
            ["<h2>Searched options (--tune)</h2>", _table(TUNE_HEAD, tune_rows(doc))]
            if any(t.get("tune") for t in doc["tasks"])
            else []
        ),
        "<h2>Stored bytes per task</h2>",
        _img(storage_bars(doc), "bytes stored per task and by the backbone"),
        _table(["task", "stored params", "stored bytes", "of the backbone"], storage(doc)),
        "<h2>Initialization lineage</h2>",
        _table(["task", "init", "initialised from"], lineage_rows(doc)),
        "<h2>No-forgetting evidence</h2><p>Backbone fingerprint after every arrival:</p>",
        _table(["position", "task", "fingerprint", "equal to load"], fp_rows(doc)),
        "<p>Predictions sha256 of every re-evaluation against the task's own arrival:</p>",
        _table(["task", "position", "sha256", "score", "matches arrival"], sha_rows(doc)),
        "</body></html>",
    ]
    return "\n".join(parts)
