"""Every per-task module beside full fine-tuning on our tasks: the survey's comparison.

    python -m bench.methods                      # minilm and smollm2 suites (hours)
    python -m bench.methods --backbones minilm   # the minilm suites only
    python -m bench.methods --quick              # one task, two methods, a few steps
    python -m bench.methods --backbones minilm --methods prompt --tasks trec --merge
                                                 # add runs to the committed results
    python -m bench.methods --backbones minilm --efficiency-only --merge
                                                 # only the efficiency columns, all methods

For each backbone and task, full fine-tuning and every module kind (prefix, lora, prompt, ptuning, ia3,
bitfit) train the same number of steps at each learning rate of a small sweep
(`bench.methods_run.LRS`); the rate with the best validation score (a split of the training
data) is kept and its eval score reported. Then, on the backbone's first task: trainable
parameters (% of the backbone), stored bytes per task, peak memory (each method alone in a
fresh process for a few steps), training step time (the methods interleaved in one process,
rounds of a few steps by turns) and mixed-batch serving throughput (the suite's tasks'
requests interleaved: a module kind's tasks share passes; fine-tuned copies cannot). Catalog
tasks are where the defaults were chosen; held-out tasks come from sources the catalog does not
use. Results: bench/results/methods.json, written after each task.

`--merge` starts from the results file and adds what this run measures (a task's runs of the
methods run, beside its runs at other rates, the best on validation chosen among all; the
efficiency columns unless `--no-efficiency`), so a suite can be filled, or a sweep widened
(`--lrs`), in several sittings; `complete` says whether every task has every method and the
efficiency columns cover them all. `--efficiency-only` skips the sweeps: the modules served
are trained `--time-steps` steps on each catalog task (throughput does not depend on what
they learned).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, run_worker, table, write
from bench.methods_run import LRS, METHODS, applicable, serving, step_times, train_one

#: The issue's suites: minilm on four classification tasks (three catalog, one held out),
#: smollm2 on one classification and one generation task. (A fifth minilm task, bbc_news, was
#: listed at first and never run; it was taken out of the suite unmeasured.)
SUITES = {
    "minilm": {
        "catalog": ("trec", "sms_spam", "vader_nyt"),
        "heldout": ("sarcasm_headlines",),
    },
    "smollm2": {"catalog": ("sms_spam", "bbc_headlines"), "heldout": ()},
}
MAX_TRAIN, MAX_EVAL = 1000, 300
BATCH = {"minilm": 16, "smollm2": 8}


def sweep(backbone: Any, data: Any, method: str, config: Any, lrs, before=()) -> dict[str, Any]:
    """Train `method` at each rate of `lrs`; the rate with the best validation value is kept.
    `before`: runs of an earlier sitting (`--merge`) at other rates, chosen among as well."""
    runs = [r for r in before if r["lr"] not in lrs]
    for lr in lrs:
        r = train_one(backbone, data, method, config.with_(lr=lr))
        runs.append({"lr": lr, **r})
        print(f"    {method} lr {lr:g}: val {r['validation']} eval {r['eval']:.4f}", flush=True)
    runs.sort(key=lambda r: r["lr"])
    best = max(runs, key=lambda r: -1e9 if r["validation"] is None else r["validation"])
    served = best.get("_served") or next(r["_served"] for r in runs if "_served" in r)
    return {
        "lr": best["lr"],
        "eval": best["eval"],
        "validation": best["validation"],
        "metric": best["metric"],
        "trainable_params": best["trainable_params"],
        "stored_bytes": best["stored_bytes"],
        "sweep": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
        "_served": served,
    }


def efficiency(name: str, backbone: Any, data: Any, methods, served, about, a) -> dict:
    """Step time, memory and serving throughput on one task (see the module's docstring)."""
    from continual.train import TrainConfig

    config = TrainConfig(batch_size=BATCH[name], max_length=a.max_length)
    times = step_times(backbone, data, list(methods), a.time_steps, a.time_rounds, config)
    out: dict[str, Any] = {"step_seconds": {m: statistics.median(t) for m, t in times.items()}}
    spec = {"backbone": name, "dataset": data.spec.name, "steps": 3,
            "batch_size": BATCH[name], "max_length": a.max_length}  # fmt: skip
    out["memory"] = {m: run_worker("method_memory", {**spec, "method": m}) for m in methods}
    if served and len(about) > 1:
        texts = [e.text for e in data.eval][: a.serve_items]
        items = [(i % len(about), t) for i, t in enumerate(texts)]
        out["serving_items_per_second"] = serving(backbone, served, items, about, 32)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="minilm,smollm2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tasks", help="only these tasks of the suites (comma-separated)")
    ap.add_argument("--lrs", help="rates to run instead of the sweep's (comma-separated)")
    ap.add_argument("--steps", type=int, default=200, help="training steps per run")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--time-steps", type=int, default=8)
    ap.add_argument("--time-rounds", type=int, default=3)
    ap.add_argument("--serve-items", type=int, default=256)
    ap.add_argument("--merge", action="store_true", help="add to the results file")
    ap.add_argument("--no-efficiency", action="store_true")
    ap.add_argument("--efficiency-only", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    suites = {b: SUITES[b] for b in a.backbones.split(",")}
    if a.tasks:
        keep = set(a.tasks.split(","))
        suites = {b: {g: tuple(t for t in ts if t in keep) for g, ts in s.items()}
                  for b, s in suites.items()}  # fmt: skip
    lrs = {m: LRS[m] for m in methods}
    if a.lrs:
        lrs = {m: tuple(float(x) for x in a.lrs.split(",")) for m in methods}
    if a.quick:
        suites = {"minilm": {"catalog": ("trec", "sms_spam"), "heldout": ()}}
        methods, a.steps, a.time_steps, a.time_rounds, a.serve_items = (
            ["full", "lora"], 4, 2, 1, 16)  # fmt: skip
        lrs = {m: LRS[m][1:2] for m in methods}
    # a quick run checks the bench end to end; its data caps keep the probe and evaluation short
    a.max_train, a.max_eval = (200, 64) if a.quick else (MAX_TRAIN, MAX_EVAL)
    name_out = "methods_quick" if a.quick else "methods"
    out = None if a.out is None else Path(a.out)
    path = out or RESULTS / f"{name_out}.json"
    doc: dict[str, Any] = {"bench": "methods", "machine": machine(), "quick": a.quick,
                           "setup": {"steps": a.steps, "max_length": a.max_length,
                                     "max_train": a.max_train, "max_eval": a.max_eval, "lrs": lrs},
                           "backbones": {}}  # fmt: skip
    if a.merge and path.exists():
        doc = json.loads(path.read_text())
        if doc["setup"]["steps"] != a.steps or doc["setup"]["max_length"] != a.max_length:
            raise SystemExit(f"--merge: {path} was run with other --steps or --max-length")
        for m, rates in lrs.items():  # the rates each method has been run at, all sittings
            had = doc["setup"]["lrs"].get(m, [])
            doc["setup"]["lrs"][m] = sorted(set(had) | set(rates))
        doc.setdefault("machines", [doc["machine"]]).append(machine())
    began = time.perf_counter()
    for name, suite in suites.items():
        run_suite(name, suite, methods, lrs, doc, a, path)
    if a.merge:  # several sittings: each run's own seconds are in its sweep entry
        doc.pop("seconds", None)
    else:
        doc["seconds"] = time.perf_counter() - began
    print(render(doc))
    done = True if a.quick else complete(doc)  # a quick run is complete as what it is
    print(f"wrote {write(name_out, doc | {'complete': done}, out)}")
    return 0


def run_suite(name: str, suite, methods, lrs, doc, a, path: Path) -> None:
    from continual.backbones import load_backbone
    from continual.train import TrainConfig
    from tasks.load import DataArgs, load_data

    backbone = load_backbone(name)
    config = TrainConfig(steps=a.steps, eval_every=max(1, a.steps // 4),
                         batch_size=BATCH[name], max_length=a.max_length)  # fmt: skip
    here = [m for m in methods if applicable(m, backbone) is None]
    rows = doc["backbones"].setdefault(name, {"n_params": backbone.n_params, "tasks": {}})
    rows["not_applicable"] = rows.get("not_applicable", {}) | {
        m: applicable(m, backbone) for m in methods if m not in here}  # fmt: skip
    served: dict[str, list[Any]] = {m: [] for m in here}
    about: list[Any] = []
    first = None
    for group, tasks in suite.items():
        for task in tasks:
            data = load_data(DataArgs(dataset=task, max_train=a.max_train, max_eval=a.max_eval,
                                      seed=0))  # fmt: skip
            first = first or data
            serves = group == "catalog" and data.spec.kind == "classification"
            if a.efficiency_only:
                if serves:
                    short = config.with_(steps=a.time_steps, eval_every=a.time_steps + 1)
                    for m in here:
                        served[m].append(train_one(backbone, data, m, short)["_served"])
                    about.append((data.spec, config.limits))
                continue
            print(f"  {name} {task} ({group})", flush=True)
            before = rows["tasks"].get(task, {}).get("methods", {})
            res = {m: sweep(backbone, data, m, config, lrs[m],
                            before.get(m, {}).get("sweep", ()) if a.merge else ())
                   for m in here}  # fmt: skip
            if serves:
                for m in here:
                    served[m].append(res[m]["_served"])
                about.append((data.spec, config.limits))
            entry = rows["tasks"].setdefault(
                task, {"group": group, "kind": data.spec.kind, "methods": {}}
            )
            entry["methods"] |= {m: {k: v for k, v in r.items() if not k.startswith("_")}
                                 for m, r in res.items()}  # fmt: skip
            write(path.stem, doc | {"complete": False}, path)
    if first is not None and not a.no_efficiency:
        rows["efficiency"] = efficiency(name, backbone, first, here, served, about, a)
        write(path.stem, doc | {"complete": False}, path)


def complete(doc: dict[str, Any]) -> bool:
    """Every suite task has every method that runs on its backbone, and the efficiency
    columns cover them all."""
    for name, suite in SUITES.items():
        rows = doc["backbones"].get(name)
        if rows is None:
            return False
        want = set(METHODS) - set(rows.get("not_applicable", {}))
        for task in (t for ts in suite.values() for t in ts):
            if task not in rows["tasks"] or want - set(rows["tasks"][task]["methods"]):
                return False
        if want - set(rows.get("efficiency", {}).get("step_seconds", {})):
            return False
    return True


def render(doc: dict[str, Any]) -> str:
    parts = []
    for name, rows in doc["backbones"].items():
        n = rows["n_params"]
        eff = rows.get("efficiency", {})
        tasks = rows["tasks"]
        methods = sorted({m for t in tasks.values() for m in t["methods"]}, key=METHODS.index)
        header = ["method", *tasks, "trainable %", "stored KB", "step ms", "train MB", "serve/s"]
        body = []
        for m in methods:
            one = next(t["methods"][m] for t in tasks.values() if m in t["methods"])
            body.append([
                m,
                *[f"{t['methods'][m]['eval']:.4f} @{t['methods'][m]['lr']:g}" if m in
                  t["methods"] else "-" for t in tasks.values()],
                f"{100 * one['trainable_params'] / n:.3f}",
                round(one["stored_bytes"] / 1024, 1),
                round(1000 * eff.get("step_seconds", {}).get(m, float("nan")), 1),
                round(_above(eff.get("memory", {}).get(m, {})), 0),  # nan: not measured
                round(eff.get("serving_items_per_second", {}).get(m, float("nan")), 1),
            ])  # fmt: skip
        parts.append(f"{name} ({n / 1e6:.1f}M parameters)\n" + table(header, body))
        for m, why in rows.get("not_applicable", {}).items():
            parts.append(f"  {m}: {why}")
    return "\n\n".join(parts)


def _above(mem: dict[str, float]) -> float:
    """Training's peak above the loaded backbone and data (MB)."""
    return mem.get("peak_rss_mb", float("nan")) - mem.get("rss_loaded_mb", float("nan"))


if __name__ == "__main__":
    raise SystemExit(main())
