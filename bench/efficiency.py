"""Machine efficiency: achieved FLOP/s of our training step as a fraction of what a large
`torch.matmul` achieves on the same machine in the same run.

    python -m bench.efficiency            # smollm2 and minilm, batch 8 x ~128 tokens
    python -m bench.efficiency --quick    # minilm, a few steps (what a test runs)

The step is `continual.train.train`'s (P = 16) on imdb reviews, inputs cut so that rows are
about 128 tokens (minilm: 128 with its two special tokens; smollm2: the prompt, a review cut
to 112 tokens, and the label's words). Its FLOPs are counted analytically from the real tokens
of each batch (`bench.flops`: what must be computed, padding and masked attention pairs not
counted); achieved FLOP/s is FLOPs / step time per step, median over steps. The reference is
the median of float32 2048x2048x2048 `torch.matmul` runs taken before and after the steps,
at the same thread count.

Prints a table and writes bench/results/efficiency.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import machine, table, write
from bench.contenders import StepSetup, batch_sequence, run_ours
from bench.flops import Shape, train_step_flops

RUNS = {
    "smollm2": {"max_length": 112, "warmup": 2, "steps": 8},
    "minilm": {"max_length": 128, "warmup": 3, "steps": 20},
}
QUICK = {"minilm": {"max_length": 32, "warmup": 1, "steps": 2}}
MATMUL_N = 2048


def matmul_flops(n: int = MATMUL_N, repeats: int = 10) -> list[float]:
    """FLOP/s of `repeats` float32 n x n x n matmuls (after one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        out.append(2 * n**3 / (time.perf_counter() - t0))
    return out


def step_lengths(bb, data, setup: StepSetup) -> list[tuple[list[int], int]]:
    """(sequence lengths, scored positions) of each batch the step sees."""
    from continual.objectives import prompt_ids, target_ids

    limits = setup.train_config().limits
    out = []
    for chunk in batch_sequence(data, setup):
        if bb.kind == "encoder":
            enc = bb.tokenizer(
                [e.text for e in chunk], truncation=True, max_length=limits.max_length
            )
            out.append(([len(x) for x in enc["input_ids"]], 0))
        else:
            lens, scored = [], 0
            for e in chunk:
                tail = len(target_ids(bb, e.target, limits))
                lens.append(len(prompt_ids(bb, data.spec, e.text, limits)) + tail)
                scored += tail
            out.append((lens, scored))
    return out


def measure(name: str, plan: dict[str, int]) -> dict[str, Any]:
    from continual.backbones import load_backbone
    from tasks.load import DataArgs, load_data

    bb = load_backbone(name)
    data = load_data(DataArgs(dataset="imdb", max_train=2000, seed=0))
    setup = StepSetup(
        batch_size=8,
        max_length=plan["max_length"],
        prefix_length=16,
        warmup=plan["warmup"],
        steps=plan["steps"],
    )
    before = matmul_flops()
    times, _ = run_ours(bb, data, setup)
    after = matmul_flops()
    shape = Shape.of(bb)
    lengths = step_lengths(bb, data, setup)[setup.warmup :]
    counts = [
        train_step_flops(shape, lens, prefix_length=16, scored_positions=scored)
        for lens, scored in lengths
    ]
    achieved = [c["total"] / t for c, t in zip(counts, times)]
    reference = statistics.median(before + after)
    return {
        "batch_size": setup.batch_size,
        "mean_tokens_per_row": statistics.mean(statistics.mean(x) for x, _ in lengths),
        "median_step_seconds": statistics.median(times),
        "flops_per_step_median": statistics.median(c["total"] for c in counts),
        "flops_breakdown_first_step": counts[0],
        "achieved_flops_median": statistics.median(achieved),
        "matmul_flops_median": reference,
        "matmul_flops_before": before,
        "matmul_flops_after": after,
        "fraction_of_matmul": statistics.median(achieved) / reference,
        **plan,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    plans = QUICK if a.quick else RUNS
    began = time.perf_counter()
    doc: dict[str, Any] = {
        "bench": "efficiency",
        "quick": a.quick,
        "machine": machine(),
        "matmul": f"float32 {MATMUL_N}x{MATMUL_N}x{MATMUL_N}",
        "runs": {n: measure(n, p) for n, p in plans.items()},
    }
    doc["seconds"] = time.perf_counter() - began
    path = write(
        "efficiency_quick" if a.quick else "efficiency", doc, Path(a.out) if a.out else None
    )
    rows = [
        [
            n,
            f"{r['batch_size']} x {r['mean_tokens_per_row']:.0f}",
            r["median_step_seconds"],
            r["flops_per_step_median"] / 1e9,
            r["achieved_flops_median"] / 1e9,
            r["matmul_flops_median"] / 1e9,
            f"{100 * r['fraction_of_matmul']:.0f}%",
        ]
        for n, r in doc["runs"].items()
    ]
    head = ["backbone", "batch", "step s", "GFLOP/step", "GFLOP/s", "matmul GFLOP/s", "fraction"]
    print("training step FLOP/s against a large matmul, same run\n" + table(head, rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
