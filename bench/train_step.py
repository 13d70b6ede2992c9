"""Training step time, throughput and peak memory: ours against PEFT prefix tuning and full
fine-tuning, on the same batches.

    python -m bench.train_step            # minilm (two input lengths) and smollm2
    python -m bench.train_step --quick    # minilm only, a few steps (what a test runs)

Setups (P = 16, MLP reparameterization hidden 512 for ours and PEFT):
- minilm on trec questions, batch 16, inputs cut to 64 tokens (short, uneven questions);
- minilm on imdb reviews, batch 16, cut to 128 tokens (long, mostly full-length inputs);
- smollm2 on sms_spam as text to text, batch 8, messages cut to 64 tokens.

Time: the three contenders run in one process, interleaved step by step on the same batch (ours'
step i, then PEFT's, then full fine-tuning's), so that the machine's drift over seconds (it is
shared) falls on all three alike; ratios are taken step by step and their median is quoted, over
`rounds` processes of `warmup + steps` steps. Ours is `continual.train.train`'s own loop. A step
is text in to update out: tokenization, forward, backward, clipping and the optimizer.

Memory: each contender alone in a fresh process for a few steps; its peak resident set
(ru_maxrss), with the resident set after `import torch, transformers` and our packages for scale.
Those runs' own step times are recorded too (`isolated_*`).

Prints a table and writes bench/results/train_step.json (train_step_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import machine, median, paired_ratio, rounds, run_worker, table, write
from bench.contenders import CONTENDERS, describe

SETUPS = {
    "minilm-trec-64": {
        "backbone": "minilm",
        "dataset": "trec",
        "setup": {"batch_size": 16, "max_length": 64, "prefix_length": 16},
    },
    "minilm-imdb-128": {
        "backbone": "minilm",
        "dataset": "imdb",
        "max_train": 4000,
        "setup": {"batch_size": 16, "max_length": 128, "prefix_length": 16},
    },
    "smollm2-sms_spam-64": {
        "backbone": "smollm2",
        "dataset": "sms_spam",
        "setup": {"batch_size": 8, "max_length": 64, "prefix_length": 16},
    },
}
FULL = {
    "minilm-trec-64": {"rounds": 3, "warmup": 3, "steps": 20, "memory_steps": 4},
    "minilm-imdb-128": {"rounds": 3, "warmup": 2, "steps": 10, "memory_steps": 3},
    "smollm2-sms_spam-64": {"rounds": 2, "warmup": 2, "steps": 6, "memory_steps": 2},
}
QUICK = {
    "minilm-trec-64": {
        "rounds": 1,
        "warmup": 1,
        "steps": 2,
        "memory_steps": 1,
        "head_init": "random",
    }
}


def measure(name: str, plan: dict[str, Any]) -> dict[str, Any]:
    base = SETUPS[name]
    start = {"head_init": plan.get("head_init", "probe")}  # as ablation reads it
    timed = {**base["setup"], **start, "warmup": plan["warmup"], "steps": plan["steps"]}
    per_step: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    for r in range(plan["rounds"]):
        t0 = time.perf_counter()
        got = run_worker("interleaved", {**base, "setup": timed})["step_seconds"]
        for c in CONTENDERS:
            per_step[c] += got[c]
        print(
            f"  {name} interleaved round {r + 1}/{plan['rounds']}: "
            f"{time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    alone = {**base["setup"], **start, "warmup": 1, "steps": plan["memory_steps"]}
    mem = rounds(
        CONTENDERS,
        lambda c: run_worker("step", {**base, "setup": alone, "contender": c}),
        1,
        label=f"{name} memory",
    )
    first = mem["ours"][0]
    out: dict[str, Any] = {
        "backbone": base["backbone"],
        "dataset": base["dataset"],
        **base["setup"],
        **plan,
        "real_tokens_per_step": first["tokens_per_step"],
        "contenders": {},
    }
    for c in CONTENDERS:
        step = median(per_step[c])
        m = mem[c][0]
        out["contenders"][c] = {
            "median_step_seconds": step,
            "step_seconds": per_step[c],
            "examples_per_second": base["setup"]["batch_size"] / step,
            "tokens_per_second": first["tokens_per_step"] / step,
            "peak_rss_mb": m["peak_rss_mb"],
            "rss_after_imports_mb": m["rss_start_mb"],
            "isolated_step_seconds": m["step_seconds"],
            "trainable_params": m["trainable_params"],
        }
    peak = {c: out["contenders"][c]["peak_rss_mb"] for c in CONTENDERS}
    floor = out["contenders"]["ours"]["rss_after_imports_mb"]
    out["ratio_ours_over_peft"] = paired_ratio(per_step["ours"], per_step["peft"])
    out["ratio_ours_over_full"] = paired_ratio(per_step["ours"], per_step["full"])
    out["peak_memory_ratio_ours_over_full"] = peak["ours"] / peak["full"]
    out["peak_memory_above_imports_ratio_ours_over_full"] = (peak["ours"] - floor) / (
        peak["full"] - floor
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="minilm, one round of a few steps")
    ap.add_argument("--only", choices=sorted(SETUPS), action="append")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    plans = QUICK if a.quick else FULL
    names = [n for n in plans if not a.only or n in a.only]
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "bench": "train_step",
        "quick": a.quick,
        "machine": machine(),
        "contenders": describe(),
        "setups": {},
    }
    for name in names:
        doc["setups"][name] = measure(name, plans[name])
    doc["seconds"] = time.perf_counter() - started
    out = Path(a.out) if a.out else None
    path = write("train_step_quick" if a.quick else "train_step", doc, out)
    print(render(doc))
    print(f"wrote {path}")
    return 0


def render(doc: dict[str, Any]) -> str:
    rows, ratios = [], []
    for name, s in doc["setups"].items():
        for c in CONTENDERS:
            x = s["contenders"][c]
            rows.append(
                [
                    name if c == "ours" else "",
                    c,
                    x["median_step_seconds"] * 1000,
                    x["examples_per_second"],
                    x["tokens_per_second"],
                    x["peak_rss_mb"],
                    f"{x['trainable_params']:,}",
                ]
            )
        ratios.append(
            f"{name}: step ours/peft {s['ratio_ours_over_peft']:.2f}, ours/full "
            f"{s['ratio_ours_over_full']:.2f}; peak memory ours/full "
            f"{s['peak_memory_ratio_ours_over_full']:.2f} "
            f"({s['peak_memory_above_imports_ratio_ours_over_full']:.2f} above imports)"
        )
    head = ["setup", "contender", "step ms", "examples/s", "tokens/s", "peak MB", "trainable"]
    return "\n".join(
        [
            "training step, medians over interleaved steps",
            table(head, rows),
            "ratios (median of per-step):",
        ]
        + ["  " + r for r in ratios]
    )


if __name__ == "__main__":
    raise SystemExit(main())
