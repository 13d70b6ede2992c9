"""Prefix quality on real data: the untrained (randomly initialised) prefix against the trained
one, per backbone and task, on each task's eval split.

    python -m bench.prefix_quality                 # all runs (about 30 min on 2 cores)
    python -m bench.prefix_quality --only trec-minilm

Prints a table and writes bench/results/prefix_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from continual.backbones import load_backbone
from continual.finetune import fresh_head
from continual.inference import TrainedTask, evaluate
from continual.init import InitContext, initial_tensors
from continual.modules import build, module_kind
from continual.train import TrainConfig, train
from tasks import catalog

RUNS = {
    # name: (backbone, dataset, prefix length, positions, init, train config, max_train)
    "trec-minilm": (
        "minilm",
        "trec",
        16,
        "explicit",
        "random",
        TrainConfig(steps=400, batch_size=16, lr=1e-3),
        None,
    ),
    "trec-minilm-shifted": (
        "minilm",
        "trec",
        16,
        "shifted",
        "random",
        TrainConfig(steps=400, batch_size=16, lr=1e-3),
        None,
    ),
    "sms_spam-smollm2": (
        "smollm2",
        "sms_spam",
        16,
        "shifted",
        "random",
        TrainConfig(steps=200, batch_size=8, lr=1e-3, eval_every=40, val_max=128, max_length=64),
        None,
    ),
    "bbc_headlines-smollm2": (
        "smollm2",
        "bbc_headlines",
        16,
        "shifted",
        "random",
        TrainConfig(
            steps=150,
            batch_size=8,
            lr=1e-3,
            eval_every=50,
            val_max=64,
            max_length=96,
            max_target_length=24,
        ),
        None,
    ),
}


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(name: str) -> dict:
    bb_name, dataset, length, positions, init, config, max_train = RUNS[name]
    data = catalog.load(dataset, max_train=max_train)
    backbone = load_backbone(bb_name)
    pconfig = module_kind("prefix").config_for(
        backbone, length=length, positions=positions, init=init
    )
    start = initial_tensors(init, InitContext(backbone, data.spec, pconfig, {}))
    started = time.perf_counter()
    result = train(backbone, data, pconfig, config, init=start)
    trained = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)

    def untrained(base: dict[str, torch.Tensor] | None):
        """The prefix as initialised, before any step (encoders: the seed's fresh head)."""
        head = fresh_head(backbone, data.spec, config.seed)
        task = TrainedTask(
            spec=data.spec,
            config=pconfig,
            tensors=build(pconfig, start=base, seed=config.seed).eject(),
            head=head.eval() if head is not None else None,
            limits=config.limits,
        )
        return evaluate(backbone, task, data.eval, batch_size=config.eval_batch_size)

    at_random = untrained(None)
    at_init = at_random if start is None else untrained(start)
    return {
        "run": name,
        "backbone": bb_name,
        "dataset": dataset,
        "metric": trained.metric,
        "n_eval": trained.n,
        "init": init,
        "untrained": at_random.score,
        "untrained_init": at_init.score,
        "trained": trained.score,
        "gain_points": 100 * (trained.score - at_random.score),
        "bleu_trained": trained.extra.get("bleu"),
        "bleu_untrained": at_random.extra.get("bleu"),
        "steps": result.steps,
        "best_step": result.best_step,
        "train_seconds": result.seconds,
        "total_seconds": time.perf_counter() - started,
        "prefix_length": length,
        "positions": positions,
        "train_config": config.to_dict(),
        "predictions_sha256": trained.predictions_sha256,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(RUNS), help="runs to do (default: all)")
    ap.add_argument("--out", help="results file (default: under bench/results/)")
    ap.add_argument(
        "--suite",
        choices=("catalog", "heldout"),
        help="instead of the runs: the default prefix against full fine-tuning, a linear probe "
        "and the previous recipe on a suite (bench/quality_compare.py)",
    )
    ap.add_argument("--tasks", nargs="*", help="with --suite: these tasks only")
    ap.add_argument("--quick", action="store_true", help="with --suite: 10 steps, 64 examples")
    args = ap.parse_args()
    if args.suite:
        from bench import quality_compare

        quality_compare.main(args.suite, args.tasks, args.quick, args.out)
        return
    args.out = args.out or "bench/results/prefix_quality.json"
    out = Path(args.out)
    previous = json.loads(out.read_text())["runs"] if out.exists() else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(RUNS):
        previous[name] = run(name)
        print(json.dumps(previous[name]), flush=True)
        out.write_text(json.dumps({"machine": machine(), "runs": previous}, indent=2))
    print(f"\n{'run':24} {'metric':9} {'init':>6} {'untrained':>9} {'trained':>8} {'gain':>7}")
    for r in previous.values():
        print(
            f"{r['run']:24} {r['metric']:9} {r.get('init', 'random'):>6} {r['untrained']:9.4f} "
            f"{r['trained']:8.4f} {r['gain_points']:+7.2f}"
        )
    print("untrained: a randomly initialised prefix before any step; gain: trained - untrained")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
