"""The long stream (issue 18): `streams/long.yaml` in three seeded orders, the field's baselines
beside the prefixes, with the task given and with it inferred.

    python -m bench.long_stream                            # orders 0, 1, 2 one after another
    python -m bench.long_stream --parallel 3 --device cuda # the three at once on one GPU
    python -m bench.long_stream --collect                  # summarise what --root holds
    python -m bench.long_stream --groups "multitask;sequential-ft,replay,ewc;lwf,per-task-ft" \
        --parallel 9 --device cuda                         # each order split in three at once

Each order is `continual stream run streams/long.yaml --order K` in its own workspace under
`--root` (rerunning resumes a stopped order where it stopped). `--groups` splits an order's
baselines over several workspaces that run side by side (each with the prefixes too, which are
cheap): the baselines never read one another, so the merged order is the same as one workspace
running them all; the prefixes and the task-inferred scores are read from the first group. The summary reads each order's
report: per method ACC, BWT, FWT and forgetting over the whole stream; for the prefixes also the
task-inferred score (every input routed to a task by the stream's router, then answered by
that task's prefix) beside the task-given one, and routing accuracy, after every arrival; the
bytes each method keeps per task. Means are over the orders that ran to the end. Results:
bench/results/long_stream.json (`complete` false while an order is unfinished).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import machine, table, write

STREAM = Path("streams/long.yaml")
MEASURES = ("acc", "bwt", "fwt", "forgetting_max", "forgetting_last")
# Whether a method needs the task's identity when it answers (the field's table column). On an
# encoder every baseline keeps a head per task, so it needs the task to pick the head; the
# prefixes need it too, or route (the task-agnostic columns).
TASK_ID = {"prefix": "yes, or routed"}
HEADS = "yes (a head per task)"


def group_stream(stream: Path, methods: list[str] | None, root: Path, g: int) -> Path:
    """The stream file with only `methods` among its baselines (the file itself when None)."""
    if methods is None:
        return stream
    spec = yaml.safe_load(stream.read_text())
    names = {b["name"] if isinstance(b, dict) else b for b in spec.get("baselines", [])}
    unknown = set(methods) - names
    if unknown:
        raise SystemExit(f"--groups: {sorted(unknown)} not among the stream's baselines")
    spec["baselines"] = [
        b for b in spec["baselines"] if (b["name"] if isinstance(b, dict) else b) in methods
    ]
    path = root / f"stream-g{g}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_order(stream: Path, order: int, home: Path, device: str, log: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipelines.cli", "stream", "run", str(stream)]
    cmd += ["--order", str(order), "--home", str(home), "--tracking-uri", "none"]
    cmd += ["--device", device]
    start = time.perf_counter()
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return {"proc": proc, "start": start}


def stored_bytes(home: Path, name: str, report: dict[str, Any]) -> dict[str, int]:
    """Bytes kept per method at the end: the prefixes' files as the report counts them (the
    module, not the optimizer state kept for `--resume`), each baseline's saved state."""
    out = {"prefix": sum(t.get("stored_bytes") or 0 for t in report.get("tasks", []))}
    root = home / "streams" / name / "baselines"
    for method in sorted(p.name for p in root.iterdir()) if root.exists() else ():
        current = root / method / "CURRENT"
        if current.exists():
            folder = root / method / current.read_text().strip()
            out[method] = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return out


def summarise(home: Path, name: str, n_tasks: int) -> dict[str, Any] | None:
    path = home / "streams" / name / "report" / "report.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    methods = {
        m: {k: v[k] for k in MEASURES if k in v} | {"arrivals": v["arrivals"]}
        for m, v in doc["methods"].items()
    }
    agnostic = doc.get("task_agnostic") or {}
    arrivals = [
        {k: a.get(k) for k in ("tasks", "task_given", "end_to_end", "routing_accuracy")}
        | {"evaluated": a.get("evaluated", a.get("tasks"))}  # under audit: a sample of tasks
        for a in agnostic.get("per_arrival", [])
    ]
    last = arrivals[-1] if arrivals else {}
    arrived = methods.get("prefix", {}).get("arrivals", 0)
    return {
        "complete": arrived == n_tasks and all(m["arrivals"] == n_tasks for m in methods.values()),
        "tasks": doc["methods"].get("prefix", {}).get("tasks", []),
        "methods": methods,
        "task_agnostic": {
            "acc_given": last.get("task_given"),
            "acc_inferred": last.get("end_to_end"),
            "routing_accuracy": last.get("routing_accuracy"),
            "evaluated": last.get("evaluated"),
            "per_arrival": arrivals,
        },
        "stored_bytes": stored_bytes(home, name, doc),
        "evidence_ok": doc.get("evidence", {}).get("ok"),
    }


def summarise_groups(homes: list[Path], name: str, n_tasks: int) -> dict[str, Any] | None:
    """One order's summary from its groups' workspaces (the first group's prefixes)."""
    parts = [summarise(h, name, n_tasks) for h in homes]
    if any(p is None for p in parts):
        return None
    merged = dict(parts[0])
    for p in parts[1:]:
        merged["methods"] = {**merged["methods"], **{m: v for m, v in p["methods"].items()
                                                      if m != "prefix"}}  # fmt: skip
        merged["stored_bytes"] = {**p["stored_bytes"], **merged["stored_bytes"]}
        merged["complete"] = merged["complete"] and p["complete"]
        merged["evidence_ok"] = merged["evidence_ok"] and p["evidence_ok"]
    return merged


def means(orders: list[dict[str, Any]]) -> dict[str, Any]:
    done = [o for o in orders if o.get("summary") and o["summary"]["complete"]]
    if not done:
        return {}
    methods = {}
    for m in done[0]["summary"]["methods"]:
        methods[m] = {
            k: statistics.fmean(o["summary"]["methods"][m][k] for o in done)
            for k in MEASURES
            if all(k in o["summary"]["methods"].get(m, {}) for o in done)
        }
    # The report's task-agnostic scores cover a sample of tasks under `reeval: audit`: averaged
    # only where every task was scored (`python -m bench.agnostic` scores them all).
    whole = all(
        o["summary"]["task_agnostic"]["evaluated"] == len(o["summary"]["tasks"]) for o in done
    )
    agn = {
        k: statistics.fmean(o["summary"]["task_agnostic"][k] for o in done) if whole else None
        for k in ("acc_given", "acc_inferred", "routing_accuracy")
    }
    return {"orders": [o["order"] for o in done], "methods": methods, "task_agnostic": agn}


def render(doc: dict[str, Any]) -> str:
    lines = []
    for o in doc["orders"]:
        s = o.get("summary")
        if not s:
            lines.append(f"order {o['order']}: no report yet")
            continue
        state = "complete" if s["complete"] else "INCOMPLETE"
        lines.append(f"order {o['order']} ({state}, {(o.get('seconds') or 0) / 60:.1f} min)")
        order = sorted(s["methods"], key=lambda m: (m != "prefix", m))
        rows = [
            [m, TASK_ID.get(m, HEADS), s["methods"][m].get("arrivals")]
            + [None if s["methods"][m].get(k) is None else round(100 * s["methods"][m][k], 1)
               for k in MEASURES]
            for m in order
        ]  # fmt: skip
        lines.append(
            table(["method", "task id", "tasks", "ACC", "BWT", "FWT", "F max", "F last"], rows)
        )
        a = s["task_agnostic"]
        if a["acc_given"] is not None:
            sample = a["evaluated"] != len(s["tasks"])
            lines.append(
                f"prefix, task given {100 * a['acc_given']:.1f} · inferred "
                f"{100 * a['acc_inferred']:.1f} · routing {100 * a['routing_accuracy']:.1f}%"
                + (f" (the {a['evaluated']} tasks the last arrival scored; "
                   "bench.agnostic scores all)" if sample else "")
            )  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", type=Path, default=STREAM)
    ap.add_argument("--orders", default="0,1,2")
    ap.add_argument("--root", type=Path, default=Path(".bench-long"))
    ap.add_argument("--parallel", type=int, default=1, help="orders run at once")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (each order's runs)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="stop the orders still running after this many seconds")  # fmt: skip
    ap.add_argument("--groups", default=None,
                    help="split each order's baselines: ';' between groups, ',' within")  # fmt: skip
    ap.add_argument("--collect", action="store_true", help="only summarise what --root holds")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    spec = yaml.safe_load(a.stream.read_text())
    name, n_tasks = spec["name"], len(spec["arrivals"])
    orders = [int(k) for k in a.orders.split(",")]
    a.root.mkdir(parents=True, exist_ok=True)
    groups = [g.split(",") for g in a.groups.split(";")] if a.groups else [None]
    streams = [group_stream(a.stream, g, a.root, i) for i, g in enumerate(groups)]

    def homes(k: int) -> list[Path]:
        base = a.root / f"order-{k}"
        return [base] if len(groups) == 1 else [base / f"g{i}" for i in range(len(groups))]

    timing_file = a.root / "seconds.json"
    seconds = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    if not a.collect:
        jobs = [(k, i) for k in orders for i in range(len(groups))]
        began, waiting, running = time.perf_counter(), jobs, []
        while waiting or running:
            while waiting and len(running) < a.parallel:
                k, i = waiting.pop(0)
                home = homes(k)[i]
                home.mkdir(parents=True, exist_ok=True)
                log = home.parent / f"{home.name}.log"
                running.append(run_order(streams[i], k, home, a.device, log))
                running[-1]["key"] = f"{k}" if len(groups) == 1 else f"{k}/g{i}"
            time.sleep(2)
            late = a.deadline is not None and time.perf_counter() - began > a.deadline
            for r in list(running):
                if late and r["proc"].poll() is None:
                    r["proc"].terminate()
                    r["proc"].wait()
                if r["proc"].poll() is not None:
                    running.remove(r)
                    key = r["key"]
                    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - r["start"]
                    timing_file.write_text(json.dumps(seconds))
                    print(f"order {key}: exit {r['proc'].returncode}", flush=True)
            if late:
                waiting.clear()
    results = []
    for k in orders:
        keys = [str(k)] if len(groups) == 1 else [f"{k}/g{i}" for i in range(len(groups))]
        took = [seconds[x] for x in keys if x in seconds]
        results.append({"order": k, "seconds": max(took) if took else None,
                        "seconds_per_group": {x: seconds.get(x) for x in keys},
                        "summary": summarise_groups(homes(k), name, n_tasks)})  # fmt: skip
    doc = {
        "bench": "long_stream",
        "stream": str(a.stream),
        "tasks": n_tasks,
        "device": a.device,
        "groups": groups if a.groups else None,
        "parallel": a.parallel,
        "machine": machine(),
        "threads_env": os.environ.get("CONTINUAL_THREADS"),
        "complete": all(r["summary"] and r["summary"]["complete"] for r in results),
        "orders": results,
        "mean": means(results),
    }
    print(render(doc))
    path = write("long_stream", doc, a.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
