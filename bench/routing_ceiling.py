"""How far routing from the input alone can go (issue 18): the task-inferred score misses its
targets (within 1 point of the task-given score on the demo's five tasks, 2 on the long
stream's 17) because the router sends some inputs to a task with other labels, where no
answer can be right. This bench asks whether a better router would close the gap, or whether
the tasks' inputs themselves overlap.

    python -m bench.routing_ceiling            # about 25 minutes on 2 cores

Five routers, three of them logistic regressions (C = 1, as `predict --auto`'s), on the demo's five
tasks and on the long stream's 17 (demo sizes: 1,600 training and 200 eval inputs per task),
routing every eval input:

- **stored 256**: what `predict --auto` fits today, the six-layer features of a seeded sample
  of 256 training inputs per task (`continual.routing.task_keys`);
- **all training inputs**: the same features of every training input (1,600 per task), more
  than a registry keeps;
- **+ n-grams**: those features beside TF-IDF word (1-2) and character (2-5) n-grams fitted
  on the training inputs, for what the pooled features lose (style, spelling, tokens);
- **ridge**, on the stored 256 keys and on every training input: the closed-form router
  `predict --auto` uses from `ROUTE_RIDGE_FROM` tasks on (λ = 10). It is solved from sums
  (a shared Gram matrix and one key sum per task), so its statistics can take in every
  training input at arrival and still keep d + 1 numbers per task, where the logistic
  regression needs the keys themselves.

For each, the cost of its misroutes on the task-inferred score: where an input goes to a task
whose labels do not include its own, its answer is wrong, so a task that scores g with its
task given and loses a share m of its inputs that way scores about g x (1 - m) with it
inferred (an input sent to a task with its label, say between two sentiment tasks, may still
be answered right; it is not counted). `floor` is the mean over tasks of g x m: the gap that
router leaves before any answer is wrong for another reason. `g` per task comes from `bench/results/agnostic.json` (the demo and the long
stream's prefixes), which also holds the measured gap to check the estimate against. No
setting here was tuned; the n-gram ranges are the common defaults.

Prints a table and writes bench/results/routing_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_union

from bench.common import RESULTS, machine, table
from bench.routing import TASKS, demo_sized
from continual.backbones import load_backbone
from continual.routing import ROUTE_C, RidgeStats, Router, route_features, task_keys

ROUTERS = ("stored_256", "all_train", "all_train_ngrams", "ridge_256", "ridge_all_train")


def _ngrams():
    return make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    )


def ceiling(feats: dict, names: list[str], given: dict[str, float]) -> dict[str, Any]:
    """Routing accuracy of each router over `names`' eval inputs, and its misroutes' cost."""
    y_eval = np.concatenate([np.full(len(feats[t]["eval"]), i) for i, t in enumerate(names)])
    y_all = np.concatenate([np.full(len(feats[t]["train"]), i) for i, t in enumerate(names)])
    x_eval = np.concatenate([feats[t]["eval"] for t in names])
    x_all = np.concatenate([feats[t]["train"] for t in names])
    vec = _ngrams()
    ng_all = vec.fit_transform([s for t in names for s in feats[t]["train_texts"]])
    ng_eval = vec.transform([s for t in names for s in feats[t]["eval_texts"]])
    out: dict[str, Any] = {"tasks": len(names), "inputs": int(len(y_eval))}
    routers: dict[str, Any] = {}
    began = time.perf_counter()  # n-grams: sparse, so not through `Router`
    model = LogisticRegression(C=ROUTE_C, max_iter=5000, random_state=0).fit(
        sparse.hstack([sparse.csr_matrix(x_all), ng_all]).tocsr(), y_all
    )
    routers["all_train_ngrams"] = (
        model.predict(sparse.hstack([sparse.csr_matrix(x_eval), ng_eval]).tocsr()),
        time.perf_counter() - began,
    )
    for name, part in (("stored_256", "keys"), ("all_train", "train"),
                       ("ridge_256", "keys"), ("ridge_all_train", "train")):  # fmt: skip
        began = time.perf_counter()
        if name.startswith("ridge"):
            stats = RidgeStats(x_eval.shape[1])
            for k, t in enumerate(names):
                stats.add(t, feats[t][part], str(k))
            router = Router.ridge(stats)  # λ as `predict --auto` from ROUTE_RIDGE_FROM tasks on
        else:
            router = Router({t: feats[t][part] for t in names})  # what `predict --auto` fits
        order = np.array([names.index(t) for t in router.tasks])
        routers[name] = (order[router.route(x_eval).task], time.perf_counter() - began)
    for name in ROUTERS:
        got, fit_s = routers[name]
        routed = {t: got[y_eval == i] for i, t in enumerate(names)}
        masks = {t: _lost(feats, names, t, routed[t]) for t in names}
        per = {t: float(np.mean(routed[t] == i)) for i, t in enumerate(names)}
        lost = {t: float(m.mean()) for t, m in masks.items()}
        row = {"accuracy": float(np.mean(got == y_eval)), "per_task": per, "lost": lost,
               "fit_s": fit_s}  # fmt: skip
        if name == "stored_256":  # what the lost inputs look like: each task's first two
            row["lost_examples"] = [
                {"task": t, "routed_to": names[routed[t][k]], "label": feats[t]["targets"][k],
                 "text": feats[t]["eval_texts"][k]}
                for t in names for k in np.flatnonzero(masks[t])[:2]
            ]  # fmt: skip
        if all(t in given for t in names):
            row["floor"] = statistics.fmean(given[t] * lost[t] for t in names)
        out[name] = row
    return out


def _lost(feats: dict, names: list[str], task: str, routed: np.ndarray) -> np.ndarray:
    """Which of `task`'s eval inputs went to a task whose labels lack the input's own."""
    targets = feats[task]["targets"]
    return np.array(
        [t not in feats[names[j]]["labels"] for t, j in zip(targets, routed, strict=True)]
    )


def given_scores(entry: str) -> tuple[dict[str, float], float | None]:
    """Per-task task-given scores and the measured argmax gap of an agnostic.json entry."""
    path = RESULTS / "agnostic.json"
    if not path.exists():
        return {}, None
    doc = json.loads(path.read_text()).get(entry)
    if not doc:
        return {}, None
    last = doc["points"][-1]
    return {t: r["given"] for t, r in last["per_task"].items()}, last["given"] - last["argmax"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "routing_ceiling.json")
    ap.add_argument(
        "--features", type=Path, help="an .npz to keep the backbone's features in and reuse"
    )
    a = ap.parse_args(argv)
    stream = Path(__file__).resolve().parent.parent / "streams" / "long.yaml"
    long = [x["dataset"] for x in yaml.safe_load(stream.read_text())["arrivals"]]
    data = demo_sized(long)
    bb = load_backbone("minilm")
    kept = dict(np.load(a.features)) if a.features and a.features.exists() else {}
    feats: dict[str, dict[str, Any]] = {}
    for t in long:
        train_texts = [e.text for e in data[t].train]
        eval_texts = [e.text for e in data[t].eval]
        if f"{t}/keys" not in kept:
            kept[f"{t}/keys"] = task_keys(bb, data[t].train, seed=0)
            kept[f"{t}/train"] = route_features(bb, train_texts)
            kept[f"{t}/eval"] = route_features(bb, eval_texts)
            print(f"features: {t}", flush=True)
        feats[t] = {
            "keys": kept[f"{t}/keys"],
            "train": kept[f"{t}/train"],
            "eval": kept[f"{t}/eval"],
            "train_texts": train_texts,
            "eval_texts": eval_texts,
            "targets": [e.target for e in data[t].eval],
            "labels": set(data[t].spec.labels),
        }
    if a.features:
        np.savez(a.features, **kept)
    doc: dict[str, Any] = {"bench": "routing_ceiling", "machine": machine(), "backbone": bb.name}
    for suite, names, entry in (("demo", list(TASKS), "demo"), ("long", long, "long-order-0")):
        given, gap = given_scores(entry)
        doc[suite] = ceiling(feats, names, given)
        doc[suite]["measured_argmax_gap"] = gap
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))
    rows = []
    for suite in ("demo", "long"):
        r = doc[suite]
        for name in ROUTERS:
            worst = min(r[name]["per_task"], key=r[name]["per_task"].get)
            floor = r[name].get("floor")
            rows.append([
                suite, name, f"{100 * r[name]['accuracy']:.1f}%",
                f"{worst} {100 * r[name]['per_task'][worst]:.1f}%",
                "-" if floor is None else f"{100 * floor:.1f}",
            ])  # fmt: skip
    print(table(["suite", "router", "routing", "worst task", "gap floor (points)"], rows))
    for suite in ("demo", "long"):
        gap = doc[suite]["measured_argmax_gap"]
        if gap is not None:
            print(f"{suite}: measured task-given minus task-inferred (top task): {100 * gap:.1f}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
