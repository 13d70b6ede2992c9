"""Routing inputs whose task is unknown, on the demo stream's five tasks (minilm): routing
accuracy per key type, and mixed-request serving against grouping the requests per task.

    python -m bench.routing                          # routing accuracy only
    python -m bench.routing --home .continual/demo   # + serving, with the demo's prefixes

Routing: each task's keys come from a seeded sample of its training subsample (the demo's:
1,600 training and 200 eval examples per task); every eval input of the five tasks is routed.
Compared: nearest centroid of the last layer's features, nearest centroid of the six-layer
features, and the logistic-regression router over the six-layer keys (what `predict --auto`
uses).

Serving (needs a workspace whose registry holds the five tasks' prefixes): 256 requests from
the five tasks in seeded random order, answered in micro-batches of 32 as they come: one mixed
pass per micro-batch (ours) against one pass per task present in it (grouping per task, PEFT's
only way). Outputs must be equal; times are medians over alternating repeats.

Prints a table and writes bench/results/routing.json.

    python -m bench.routing --routers                # the two routers, catalog and held-out
    python -m bench.routing --keys                   # how many keys per task, long stream

Routers (`--routers`, bench/results/routing_routers.json): the logistic regression against
the closed-form ridge router (used from `ROUTE_RIDGE_FROM` tasks on), over the demo's five
catalog tasks (λ was chosen on these), and over those five plus seven held-out tasks from
sources the catalog does not use (kept out of every choice): accuracy and fit seconds.

Keys (`--keys`, bench/results/routing_keys.json): the logistic router fit on 256, 512 and 1,024
keys per task (one seeded draw of 1,024 and its first 256 and 512), beside the stored 256-key
sample, on the demo's five tasks and on the long stream's 17 (streams/long.yaml): routing
accuracy over every eval input, the worst task's, and fit seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics.pairwise import cosine_similarity

from bench.common import table
from bench.prefix_quality import machine
from continual.backbones import load_backbone
from continual.inference import predict
from continual.routing import ROUTE_SAMPLE, RidgeStats, Router, route_features, task_keys
from continual.similarity import pooled_features, sample_texts
from pipelines.jobs import task_prefix_from_registry
from registry import Registry
from tasks.load import DataArgs, load_data

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("sms_spam", "vader_tweets", "trec", "bbc_news", "imdb")
HELDOUT = (
    "hedge_wiki", "boolq", "pubmedqa", "fine_food", "sarcasm_headlines", "medmcqa_subject",
    "stereoset_bias",
)  # fmt: skip
LAMBDAS = (0.1, 1.0, 10.0)


def routing(bb, data: dict) -> dict[str, Any]:
    names = list(TASKS)
    y = np.concatenate([np.full(len(data[t].eval), i) for i, t in enumerate(names)])
    texts = [e.text for t in names for e in data[t].eval]
    out: dict[str, Any] = {"n": len(texts)}
    # nearest centroid, last layer
    last_keys = {
        t: pooled_features(bb, sample_texts(data[t].train, ROUTE_SAMPLE, 0), max_length=64)
        for t in names
    }
    last_eval = pooled_features(bb, texts, max_length=64)
    cents = np.stack([last_keys[t].mean(0) for t in names])
    out["centroid_last_layer"] = float(np.mean(cosine_similarity(last_eval, cents).argmax(1) == y))
    keys = {t: task_keys(bb, data[t].train, seed=0) for t in names}
    feats = route_features(bb, texts)
    cents = np.stack([keys[t].mean(0) for t in names])
    out["centroid_six_layers"] = float(np.mean(cosine_similarity(feats, cents).argmax(1) == y))
    router = Router(keys)
    order = [router.tasks.index(t) for t in names]
    routed = router.route(feats).task
    right = np.array([order[i] for i in y]) == routed
    out["logreg_six_layers"] = float(right.mean())
    out["per_task"] = {t: float(right[y == i].mean()) for i, t in enumerate(names)}
    confusion: dict[str, dict[str, int]] = {}
    for i, t in enumerate(names):
        got = routed[y == i]
        confusion[t] = {router.tasks[j]: int((got == j).sum()) for j in range(len(names))}
    out["confusion"] = confusion
    return out


def routers(bb, data: dict) -> dict[str, Any]:
    """Logistic against ridge (each λ), on the catalog five, then on those plus held-out."""
    keys = {t: task_keys(bb, data[t].train, seed=0) for t in data}
    feats = {t: route_features(bb, [e.text for e in data[t].eval]) for t in data}
    out: dict[str, Any] = {}
    for suite, names in (("catalog", TASKS), ("catalog+heldout", TASKS + HELDOUT)):
        x = np.concatenate([feats[t] for t in names])
        y = np.concatenate([np.full(len(feats[t]), t) for t in names])
        row: dict[str, Any] = {"tasks": len(names), "inputs": len(y)}
        began = time.perf_counter()
        router = Router({t: keys[t] for t in names})
        row["logistic"] = {"fit_s": time.perf_counter() - began}
        candidates = [("logistic", router)]
        for lam in LAMBDAS:
            began = time.perf_counter()
            stats = RidgeStats(x.shape[1])
            for k, t in enumerate(names):
                stats.add(t, keys[t], k)
            candidates.append((f"ridge_{lam:g}", Router.ridge(stats, lam=lam)))
            row[f"ridge_{lam:g}"] = {"fit_s": time.perf_counter() - began}
        for name, r in candidates:
            got = np.array(r.tasks)[r.route(x).task]
            row[name]["accuracy"] = float(np.mean(got == y))
            row[name]["per_task"] = {t: float(np.mean(got[y == t] == t)) for t in names}
        out[suite] = row
    return out


def serving(bb, data: dict, home: Path, repeats: int) -> dict[str, Any]:
    with Registry.open(home, tracking_uri="none") as reg:
        prefixes = [task_prefix_from_registry(reg, t, bb) for t in TASKS]
    rng = random.Random(0)
    pool = [(i, e.text) for i, t in enumerate(TASKS) for e in data[t].eval]
    requests = rng.sample(pool, 256)
    batches = [requests[k : k + 32] for k in range(0, len(requests), 32)]

    def mixed() -> list[str]:
        out: list[str] = []
        for b in batches:
            out += predict(bb, prefixes, b, batch_size=32)
        return out

    def grouped() -> list[str]:
        out: list[str] = []
        for b in batches:
            answers: list[str | None] = [None] * len(b)
            for i in sorted({i for i, _ in b}):
                rows = [k for k, (j, _) in enumerate(b) if j == i]
                got = predict(bb, [prefixes[i]], [(0, b[k][1]) for k in rows], batch_size=32)
                for k, g in zip(rows, got):
                    answers[k] = g
            out += [a for a in answers if a is not None]
        return out

    times: dict[str, list[float]] = {"mixed": [], "grouped": []}
    results = {}
    for _ in range(repeats):
        for name, fn in (("mixed", mixed), ("grouped", grouped)):
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "requests": len(requests),
        "micro_batch": 32,
        "tasks_per_micro_batch": statistics.mean(len({i for i, _ in b}) for b in batches),
        "repeats": repeats,
        "median_seconds": med,
        "all_seconds": times,
        "speedup_mixed_over_grouped": med["grouped"] / med["mixed"],
        "outputs_equal": results["mixed"] == results["grouped"],
    }


KEY_COUNTS = (256, 512, 1024)


def demo_sized(names) -> dict:
    """Each named catalog task at the demo's sizes: 1,600 training and 200 eval examples."""
    return {
        t: load_data(DataArgs(dataset=t, max_train=1600, max_eval=200, seed=0), None) for t in names
    }


def key_counts(bb, data: dict) -> dict[str, Any]:
    """Routing accuracy against the number of keys per task (see the module's docstring)."""
    stored = {t: task_keys(bb, data[t].train, seed=0) for t in data}
    drawn = {t: route_features(bb, sample_texts(data[t].train, max(KEY_COUNTS), 1)) for t in data}
    feats = {t: route_features(bb, [e.text for e in data[t].eval]) for t in data}
    long = tuple(data)
    out: dict[str, Any] = {}
    for suite, names in (("demo", TASKS), ("long", long)):
        x = np.concatenate([feats[t] for t in names])
        y = np.concatenate([np.full(len(feats[t]), t) for t in names])
        row: dict[str, Any] = {"tasks": len(names), "inputs": len(y)}
        fits = [("stored_256", {t: stored[t] for t in names})]
        fits += [(f"drawn_{n}", {t: drawn[t][:n] for t in names}) for n in KEY_COUNTS]
        for name, keys in fits:
            began = time.perf_counter()
            router = Router(keys)
            fit_s = time.perf_counter() - began
            got = np.array(router.tasks)[router.route(x).task]
            per = {t: float(np.mean(got[y == t] == t)) for t in names}
            row[name] = {"accuracy": float(np.mean(got == y)), "worst": min(per.values()),
                         "fit_s": fit_s, "per_task": per}  # fmt: skip
        out[suite] = row
    return out


def main_keys(bb, out: Path) -> int:
    stream = Path(__file__).resolve().parent.parent / "streams" / "long.yaml"
    names = [a["dataset"] for a in yaml.safe_load(stream.read_text())["arrivals"]]
    data = demo_sized(names)
    doc = {"bench": "routing_keys", "machine": machine(), "backbone": bb.name}
    doc["keys"] = key_counts(bb, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    fits = ["stored_256", *(f"drawn_{n}" for n in KEY_COUNTS)]
    print(table(["suite", "tasks", *fits], [
        [suite, row["tasks"], *(f"{100 * row[f]['accuracy']:.1f}% (worst {100 * row[f]['worst']:.1f})"
                                for f in fits)]
        for suite, row in doc["keys"].items()
    ]))  # fmt: skip
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, help="a workspace holding the five tasks' prefixes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--routers", action="store_true", help="logistic against ridge")
    ap.add_argument("--keys", action="store_true", help="routing against keys per task")
    a = ap.parse_args(argv)
    bb = load_backbone("minilm")
    if a.keys:
        return main_keys(bb, a.out or RESULTS / "routing_keys.json")
    if a.routers:
        return main_routers(bb, a.out or RESULTS / "routing_routers.json")
    a.out = a.out or RESULTS / "routing.json"
    data = demo_sized(TASKS)
    doc: dict[str, Any] = {"bench": "routing", "machine": machine(), "backbone": bb.name}
    doc["routing"] = routing(bb, data)
    if a.home is not None:
        doc["serving"] = serving(bb, data, a.home, a.repeats)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))
    r = doc["routing"]
    print(f"routing accuracy over {r['n']} eval inputs of {len(TASKS)} tasks (every input counts)")
    for k in ("centroid_last_layer", "centroid_six_layers", "logreg_six_layers"):
        print(f"  {k:22} {100 * r[k]:5.1f}%")
    print(
        "  per task (router): " + ", ".join(f"{t} {100 * v:.1f}" for t, v in r["per_task"].items())
    )
    if "serving" in doc:
        s = doc["serving"]
        print(
            f"serving {s['requests']} requests in micro-batches of 32 "
            f"({s['tasks_per_micro_batch']:.1f} tasks each): mixed {s['median_seconds']['mixed']:.2f} s, "
            f"grouped per task {s['median_seconds']['grouped']:.2f} s (medians of {s['repeats']}), "
            f"{s['speedup_mixed_over_grouped']:.2f}x, outputs equal: {s['outputs_equal']}"
        )
    print(f"wrote {a.out}")
    return 0


def main_routers(bb, out: Path) -> int:
    data = demo_sized(TASKS + HELDOUT)
    doc = {"bench": "routing_routers", "machine": machine(), "backbone": bb.name}
    doc["routers"] = routers(bb, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    names = ["logistic", *(f"ridge_{lam:g}" for lam in LAMBDAS)]
    print("router accuracy (and fit seconds) on every eval input of the suite's tasks")
    for suite, row in doc["routers"].items():
        cells = ", ".join(
            f"{n} {100 * row[n]['accuracy']:.1f}% ({row[n]['fit_s']:.2f} s)" for n in names
        )
        print(f"  {suite} ({row['tasks']} tasks, {row['inputs']} inputs): {cells}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
