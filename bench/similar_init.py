"""Starting a new prefix from similar earlier tasks: few-shot accuracy and steps to 90% of the
final score, per init strategy, on related and unrelated source -> target pairs (minilm).

    python -m bench.similar_init            # the full run (about an hour of one core)
    python -m bench.similar_init --quick    # one pair, one seed, a few steps (what a test runs)

Set-up, as a user's registry would have it: the six source tasks are trained once (seed 0) and
form the pool every target draws from (the target itself excluded). For each target and seed:

- few-shot: k examples per class (k = 16, 64; seeded; training holds out its usual stratified
  10% of them, at least one per class, to validate the final step), a fixed step budget, scored
  on the target's eval split, under random, words, nearest, weighted and auto (auto resolves to
  weighted or words; its run is that strategy's run, which is recorded);
- steps to 90%: the full training subsample, validated every few steps on a held-out slice of
  it. The bar is 90% of the final full-data score, i.e. of the final validation score of the
  random-init run with the same seed (what training from scratch ends at); each strategy's
  figure is the first validated step at or above that bar (a run that never reaches it counts
  as its full budget), under random and auto. One bar for both: a strategy that ends higher is
  not asked to reach a higher bar.

Calibration (on pairs this bench does not report): the auto threshold is the midpoint between
the highest embedding similarity of a cross-family calibration pair and the lowest of a
same-family one; the temperature is picked by few-shot accuracy on one calibration target.

Prints a table and writes bench/results/similar_init.json (or similar_init_quick.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.prefix_quality import machine
from continual.backbones import Backbone, load_backbone
from continual.inference import evaluate
from continual.init import AUTO_THRESHOLD, TEMPERATURE, InitContext, Source, start_module
from continual.modules import ModuleConfig
from continual.modules.prefix import prefix_config_for
from continual.similarity import similarities, task_embedding
from continual.train import TrainConfig, train
from tasks.load import DataArgs, load_data
from tasks.spec import TaskData

RESULTS = Path(__file__).resolve().parent / "results"

PAIRS = (
    ("vader_movies", "rotten_tomatoes", "related"),
    ("vader_amazon", "imdb", "related"),
    ("bbc_news", "news20", "related"),
    ("vader_tweets", "vader_nyt", "related"),
    ("trec", "sms_spam", "unrelated"),
    ("sms_spam", "bbc_news", "unrelated"),
)
STRATEGIES = ("random", "words", "nearest", "weighted", "auto")
# Calibration pairs (none of them reported above): same task family, and across families.
CAL_SAME = (
    ("vader_nyt", "vader_movies"),
    ("imdb", "vader_movies"),
    ("bbc_headlines", "bbc_news"),
    ("vader_amazon", "vader_tweets"),
)
CAL_CROSS = (
    ("sms_spam", "vader_tweets"),
    ("trec", "vader_nyt"),
    ("news20", "imdb"),
    ("aclsum", "trec"),
    ("bbc_headlines", "vader_amazon"),
    ("trec", "bbc_news"),
)
# A target no reported pair uses, with a pool of its own (two sentiment, two unrelated sources).
CAL_TARGET = ("vader_amazon", ("vader_movies", "vader_tweets", "sms_spam", "trec"))
TEMPERATURES = (0.02, 0.05, 0.2)

FULL = {
    "seeds": (0, 1, 2),
    "shots": (16, 64),
    "source": TrainConfig(steps=150, batch_size=16, lr=1e-3, max_length=64, eval_every=50),
    "few_steps": 30,
    "few_batch": 8,
    "curve": TrainConfig(
        steps=80, batch_size=16, lr=1e-3, max_length=64, eval_every=5, val_max=128, patience=0
    ),
    "curve_pairs": "related",
    "max_train": 1600,
    "max_eval": 100,
}
QUICK = {
    "seeds": (0,),
    "shots": (16,),
    "source": TrainConfig(steps=4, batch_size=8, lr=1e-3, max_length=32, eval_every=4),
    "few_steps": 3,
    "few_batch": 8,
    "curve_pairs": "related",
    "curve": TrainConfig(
        steps=6, batch_size=8, lr=1e-3, max_length=32, eval_every=3, val_max=8, patience=0
    ),
    "max_train": 64,
    "max_eval": 16,
}


def load(name: str, cfg: dict, seed: int = 0) -> TaskData:
    return load_data(
        DataArgs(dataset=name, max_train=cfg["max_train"], max_eval=cfg["max_eval"], seed=0), None
    )


def shots(data: TaskData, k: int, seed: int) -> TaskData:
    """k training examples per class, seeded."""
    rng = np.random.default_rng(1000 + seed)
    by: dict[str, list[int]] = {}
    for i, e in enumerate(data.train):
        by.setdefault(e.target, []).append(i)
    keep = sorted(i for idx in by.values() for i in rng.permutation(idx)[:k].tolist())
    return TaskData(
        spec=data.spec,
        train=tuple(data.train[i] for i in keep),
        eval=data.eval,
        fingerprint=f"{data.fingerprint}-k{k}-s{seed}",
    )


def start(
    bb: Backbone, data: TaskData, pcfg: ModuleConfig, name: str, pool: list[Source], **opts
) -> Any:
    return start_module(
        name, InitContext(bb, data.spec, pcfg.with_(init=name), {"sources": pool, **opts})
    )


def few_shot(
    bb: Backbone, data: TaskData, pcfg: ModuleConfig, s: Any, steps: int, seed: int, batch: int
) -> float:
    cfg = TrainConfig(
        steps=steps, batch_size=batch, lr=1e-3, max_length=64, seed=seed, eval_every=10**9
    )
    res = train(bb, data, pcfg, cfg, init=s.tensors, progress=False)
    return evaluate(bb, res.task, data.eval, batch_size=32).score


def curve(
    bb: Backbone, data: TaskData, pcfg: ModuleConfig, s: Any, cfg: TrainConfig
) -> list[tuple[int, float]]:
    """(step, validation score) every `eval_every` steps of a full-data run."""
    return train(bb, data, pcfg, cfg, init=s.tensors, progress=False).validations


def first_reaching(validations: list[tuple[int, float]], bar: float, budget: int) -> int:
    """The first validated step whose score is at least `bar`; `budget` if none is."""
    return next((step for step, v in validations if v >= bar), budget)


def calibrate_threshold(emb: dict[str, np.ndarray]) -> dict[str, Any]:
    def sim(a: str, b: str) -> float:
        return float(similarities(emb[a], emb[b][None])[0])

    same = {f"{a}~{b}": sim(a, b) for a, b in CAL_SAME}
    cross = {f"{a}~{b}": sim(a, b) for a, b in CAL_CROSS}
    return {
        "same_family": same,
        "cross_family": cross,
        "threshold": (min(same.values()) + max(cross.values())) / 2,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one pair, one seed, a few steps")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    ap.add_argument("--cache", type=Path, help="where trained sources are kept for reruns")
    a = ap.parse_args(argv)
    cfg = QUICK if a.quick else FULL
    pairs = PAIRS[:1] if a.quick else PAIRS
    started = time.perf_counter()
    bb = load_backbone("minilm")
    pcfg = prefix_config_for(bb, 16, None)
    names = sorted(
        {n for p in pairs for n in p[:2]}
        | ({n for p in CAL_SAME + CAL_CROSS for n in p} if not a.quick else set())
        | ({CAL_TARGET[0], *CAL_TARGET[1]} if not a.quick else set())
    )
    data = {n: load(n, cfg) for n in names}
    emb = {n: task_embedding(bb, data[n].spec, data[n].train, seed=0) for n in names}
    calibration: dict[str, Any] = {"threshold": AUTO_THRESHOLD, "temperature": TEMPERATURE}
    if not a.quick:
        calibration.update(calibrate_threshold(emb))

    sources: dict[str, Source] = {}
    source_names = sorted({p[0] for p in pairs} | (set(CAL_TARGET[1]) if not a.quick else set()))
    cache = a.cache or RESULTS / ".similar_init_sources"
    source_scores = {}
    for n in source_names:
        key = f"{n}-{'quick' if a.quick else 'full'}-{bb.fingerprint[:12]}.pt"
        if (cache / key).exists():  # a rerun reuses the sources (seeded: the same tensors)
            prefix, score = torch.load(cache / key).values()
        else:
            s = start(bb, data[n], pcfg, "random", [])
            res = train(bb, data[n], pcfg, cfg["source"], init=s.tensors, progress=False)
            prefix, score = res.task.tensors["prefix"], evaluate(bb, res.task, data[n].eval).score
            cache.mkdir(parents=True, exist_ok=True)
            torch.save({"prefix": prefix, "score": score}, cache / key)
        sources[n] = Source(n, len(sources) + 1, 0.0, {"prefix": prefix})
        source_scores[n] = score
        print(f"source {n}: {score:.3f}", flush=True)

    def pool_for(target: str, only: tuple[str, ...] | None = None) -> list[Source]:
        keep = [n for n in sources if n != target and (only is None or n in only)]
        sims = similarities(emb[target], np.stack([emb[n] for n in keep])) if keep else []
        return [
            Source(n, sources[n].prefix_id, float(x), sources[n].tensors)
            for n, x in zip(keep, sims)
        ]

    if not a.quick:  # temperature: few-shot on one calibration target, pool of its own
        target, only = CAL_TARGET
        pool = pool_for(target, only)
        scores = {}
        for t in TEMPERATURES:
            s = start(bb, shots(data[target], 64, 0), pcfg, "weighted", pool, temperature=t)
            scores[t] = few_shot(
                bb, shots(data[target], 64, 0), pcfg, s, cfg["few_steps"], 0, cfg["few_batch"]
            )
        calibration["temperature_scores"] = {str(t): v for t, v in scores.items()}
        calibration["temperature"] = max(scores, key=lambda t: (scores[t], -t))
    threshold, temperature = calibration["threshold"], calibration["temperature"]
    opts = {"threshold": threshold, "temperature": temperature}

    rows = []
    for source, target, relation in pairs:
        pool = pool_for(target)
        row: dict[str, Any] = {
            "source": source,
            "target": target,
            "relation": relation,
            "similarity": float(similarities(emb[target], emb[source][None])[0]),
            "pool": {s.task: round(s.score, 4) for s in pool},
            "few_shot": {},
            "steps_to_90": {},
        }
        for k in cfg["shots"]:
            per: dict[str, list[float]] = {n: [] for n in STRATEGIES}
            resolved = []
            for seed in cfg["seeds"]:
                d = shots(data[target], k, seed)
                done: dict[str, float] = {}
                for name in STRATEGIES:
                    s = start(bb, d, pcfg, name, pool, **opts)
                    key = s.strategy
                    if key not in done:
                        done[key] = few_shot(
                            bb, d, pcfg, s, cfg["few_steps"], seed, cfg["few_batch"]
                        )
                    per[name].append(done[key])
                    if name == "auto":
                        resolved.append(s.strategy)
            row["few_shot"][str(k)] = {
                n: {"mean": statistics.mean(v), "per_seed": v} for n, v in per.items()
            }
            row["auto_resolves_to"] = resolved[0]
        if relation == cfg["curve_pairs"]:
            per_name: dict[str, dict[str, list]] = {
                n: {"per_seed": [], "final_val": [], "curve": []} for n in ("random", "auto")
            }
            bars = []
            for seed in cfg["seeds"]:
                curve_cfg = TrainConfig.from_dict({**cfg["curve"].to_dict(), "seed": seed})
                runs = {}
                for name in ("random", "auto"):
                    s = start(bb, data[target], pcfg, name, pool, **opts)
                    if s.strategy == "random" and "random" in runs:  # auto fell back: same run
                        runs[name] = runs["random"]
                    else:
                        runs[name] = curve(bb, data[target], pcfg, s, curve_cfg)
                bar = 0.9 * runs["random"][-1][1]
                bars.append(bar)
                for name, vals in runs.items():
                    per_name[name]["per_seed"].append(
                        first_reaching(vals, bar, curve_cfg.steps + curve_cfg.eval_every)
                    )
                    per_name[name]["final_val"].append(vals[-1][1])
                    per_name[name]["curve"].append(vals)
            for name, got in per_name.items():
                row["steps_to_90"][name] = {"mean": statistics.mean(got["per_seed"]), **got}
            row["steps_to_90_bar"] = bars
        if row["steps_to_90"]:
            r, au = row["steps_to_90"]["random"]["mean"], row["steps_to_90"]["auto"]["mean"]
            row["steps_saved"] = 1 - au / r if r else 0.0
        k = str(max(cfg["shots"]))
        row["auto_minus_random_fewshot"] = (
            row["few_shot"][k]["auto"]["mean"] - row["few_shot"][k]["random"]["mean"]
        )
        rows.append(row)
        print(json.dumps({x: row[x] for x in ("source", "target", "auto_resolves_to")}), flush=True)

    doc = {
        "bench": "similar_init",
        "quick": a.quick,
        "machine": machine(),
        "backbone": bb.name,
        "config": {
            "seeds": list(cfg["seeds"]),
            "shots": list(cfg["shots"]),
            "few_shot_steps": cfg["few_steps"],
            "few_shot_batch": cfg["few_batch"],
            "steps_to_90_on": cfg["curve_pairs"],
            "source_train": cfg["source"].to_dict(),
            "curve_train": cfg["curve"].to_dict(),
            "max_train": cfg["max_train"],
            "max_eval": cfg["max_eval"],
            "prefix_length": pcfg.length,
        },
        "calibration": calibration,
        "source_scores": source_scores,
        "pairs": rows,
        "seconds": time.perf_counter() - started,
    }
    out = a.out or RESULTS / ("similar_init_quick.json" if a.quick else "similar_init.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(table(doc))
    print(f"wrote {out}")
    return 0


def table(doc: dict[str, Any]) -> str:
    k = str(max(doc["config"]["shots"]))
    head = f"{'source -> target':34} {'rel':9} {'sim':>5} {'auto->':8}"
    head += (
        "".join(f" {n[:8]:>8}" for n in STRATEGIES)
        + f" {'d auto':>7} {'steps r/a':>10} {'saved':>6}"
    )
    lines = [f"few-shot accuracy at {k}/class (mean over seeds), steps to 90% of final", head]
    for r in doc["pairs"]:
        fs = r["few_shot"][k]
        s90 = r["steps_to_90"]
        lines.append(
            f"{r['source'] + ' -> ' + r['target']:34} {r['relation']:9} {r['similarity']:5.2f} "
            f"{r['auto_resolves_to']:8}"
            + "".join(f" {100 * fs[n]['mean']:8.1f}" for n in STRATEGIES)
            + f" {100 * r['auto_minus_random_fewshot']:+7.1f}"
            + (
                f" {s90['random']['mean']:>4.0f}/{s90['auto']['mean']:<5.0f}"
                f" {100 * r['steps_saved']:5.0f}%"
                if s90
                else f" {'-':>10} {'-':>6}"
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raise SystemExit(main())
