"""Training step time, throughput and peak memory: ours against PEFT prefix tuning and full
fine-tuning, on the same batches, each contender in its own process, alternating.

    python -m bench.train_step            # minilm (two input lengths) and smollm2
    python -m bench.train_step --quick    # minilm only, a few steps (what a test runs)

Setups (P = 16, MLP reparameterization hidden 512 for ours and PEFT):
- minilm on trec questions, batch 16, inputs cut to 64 tokens (short, uneven questions);
- minilm on imdb reviews, batch 16, cut to 128 tokens (long, mostly full-length inputs);
- smollm2 on sms_spam as text to text, batch 8, messages cut to 64 tokens.

Per round, every contender runs `warmup + steps` steps in a fresh process on the batches
`continual.train.train` draws (seed 0); the round's figure is its median step. Ratios are taken
within each round, then the median over rounds is quoted. Step time is text in to update out:
tokenization, forward, backward, clipping and the optimizer. Peak memory is the process's peak
resident set (ru_maxrss), with the resident set after `import torch, transformers` for scale.

Prints a table and writes bench/results/train_step.json (train_step_quick.json with --quick).
"""

from __future__ import annotations

import argparse
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
    "minilm-trec-64": {"rounds": 5, "warmup": 3, "steps": 20},
    "minilm-imdb-128": {"rounds": 5, "warmup": 2, "steps": 10},
    "smollm2-sms_spam-64": {"rounds": 3, "warmup": 2, "steps": 6},
}
QUICK = {"minilm-trec-64": {"rounds": 1, "warmup": 1, "steps": 2}}


def measure(name: str, plan: dict[str, int]) -> dict[str, Any]:
    base = SETUPS[name]

    def one(contender: str) -> dict[str, Any]:
        setup = {**base["setup"], "warmup": plan["warmup"], "steps": plan["steps"]}
        return run_worker("step", {**base, "setup": setup, "contender": contender})

    got = rounds(CONTENDERS, one, plan["rounds"], label=name)
    per = {c: [r["median_step_seconds"] for r in got[c]] for c in CONTENDERS}
    first = got["ours"][0]
    out: dict[str, Any] = {
        "backbone": base["backbone"],
        "dataset": base["dataset"],
        **base["setup"],
        **plan,
        "real_tokens_per_step": first["tokens_per_step"],
        "contenders": {},
    }
    for c in CONTENDERS:
        step = median(per[c])
        out["contenders"][c] = {
            "median_step_seconds": step,
            "round_medians": per[c],
            "examples_per_second": base["setup"]["batch_size"] / step,
            "tokens_per_second": first["tokens_per_step"] / step,
            "peak_rss_mb": median([r["peak_rss_mb"] for r in got[c]]),
            "rss_after_imports_mb": median([r["rss_start_mb"] for r in got[c]]),
            "trainable_params": got[c][0]["trainable_params"],
        }
    peak = {c: out["contenders"][c]["peak_rss_mb"] for c in CONTENDERS}
    floor = out["contenders"]["ours"]["rss_after_imports_mb"]
    out["ratio_ours_over_peft"] = paired_ratio(per["ours"], per["peft"])
    out["ratio_ours_over_full"] = paired_ratio(per["ours"], per["full"])
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
        ["training step, medians over rounds", table(head, rows), "ratios (median of per-round):"]
        + ["  " + r for r in ratios]
    )


if __name__ == "__main__":
    raise SystemExit(main())
