"""The task-agnostic score of a stream's prefixes (issue 18): every eval input of every task
so far, its task not given, routed and answered two ways, against the answer with the task
given.

    python -m bench.agnostic --home .continual/demo                # the demo's five tasks
    python -m bench.agnostic --home DIR --stream long --every 1    # after every arrival

- **argmax**: the router's top task answers (what the stream reported before pooling).
- **pooled**: where the router gives other tasks at least `POOL_MIN`, each candidate's prefix
  gives its label probabilities and the answer is the label most likely right over them
  (`continual.routing.pooled_label`); elsewhere as argmax.

Both use the stream's own prefixes and router (the same fitted router, read from the
workspace's cache). Neither rule has a tuned parameter; `POOL_MIN` and `POOL_MAX` bound the
cost. Results: bench/results/agnostic.json (one entry per `--name`, kept beside the others).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, table
from continual import routing
from continual.inference import evaluate
from pipelines import ledger
from pipelines.arrival.book import TaskBook
from pipelines.jobs import stored_backbone, task_prefix_from_registry
from pipelines.serve import AutoPredictor, task_agnostic
from registry import Registry


def measure(home: Path, stream: str, upto: int | None = None) -> dict[str, Any]:
    """Given, argmax and pooled scores of the stream's first `upto` tasks (all: None)."""
    with Registry.open(home, tracking_uri="none") as reg:
        tasks = ledger.stream_tasks(reg, stream)[:upto]
        backbone = stored_backbone(reg, tasks[0])
        book = TaskBook(stream)
        entries, given = [], {}
        for t in tasks:
            info, data = book.task(reg, t), book.data(reg, t)
            prefix = task_prefix_from_registry(reg, t, backbone)
            bs = info.config.eval_batch_size
            ev = evaluate(backbone, prefix, data.eval, batch_size=bs)
            given[t] = ev.score
            entries.append((data.spec, data.eval, ev.predictions, bs))
        predictor = AutoPredictor(reg, backbone, tasks)
        cache: dict = {}
        out: dict[str, Any] = {"tasks": len(tasks), "per_task": {}}
        for rule, pool_max in (("argmax", 1), ("pooled", routing.POOL_MAX)):
            keep, routing.POOL_MAX = routing.POOL_MAX, pool_max
            start = time.perf_counter()
            try:
                found = task_agnostic(backbone, predictor, entries, cache)
            finally:
                routing.POOL_MAX = keep
            out[f"{rule}_seconds"] = time.perf_counter() - start
            for t, (end, routed) in found.items():
                row = out["per_task"].setdefault(t, {"given": given[t]})
                row[rule], row["routing"] = end.score, routed.score
        rows = out["per_task"].values()
        for k in ("given", "argmax", "pooled", "routing"):
            out[k] = statistics.fmean(r[k] for r in rows)
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True, help="a workspace a stream ran in")
    ap.add_argument("--stream", default="default")
    ap.add_argument("--every", type=int, default=0, help="also after every k-th arrival")
    ap.add_argument("--name", default=None, help="the entry's name in the results file")
    ap.add_argument("--out", type=Path, default=RESULTS / "agnostic.json")
    a = ap.parse_args(argv)
    with Registry.open(a.home, tracking_uri="none") as reg:
        n = len(ledger.stream_tasks(reg, a.stream))
    points = sorted({*range(a.every, n, a.every), n} if a.every else {n})
    steps = [measure(a.home, a.stream, k) for k in points]
    rows = [
        [s["tasks"], *(round(100 * s[k], 2) for k in ("given", "argmax", "pooled", "routing"))]
        + [round(100 * (s["pooled"] - s["given"]), 2)]
        for s in steps
    ]
    print(table(["tasks", "given", "argmax", "pooled", "routing %", "pooled - given"], rows))
    last = steps[-1]
    print(table(["task", "given", "argmax", "pooled", "routing %"], [
        [t, *(round(100 * r[k], 1) for k in ("given", "argmax", "pooled", "routing"))]
        for t, r in last["per_task"].items()
    ]))  # fmt: skip
    doc = json.loads(a.out.read_text()) if a.out.exists() else {"bench": "agnostic"}
    name = a.name or f"{a.stream}:{a.home.name}"
    doc[name] = {"home": str(a.home), "stream": a.stream, "points": steps,
                 "pool_min": routing.POOL_MIN, "pool_max": routing.POOL_MAX}  # fmt: skip
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out} [{name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
