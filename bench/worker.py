"""One contender's measurement in its own process (so peak memory is its own), for
`bench.common.run_worker`. Prints one JSON object as its last line.

    python -m bench.worker step --spec '{"backbone": "minilm", "contender": "ours", ...}'
    python -m bench.worker interleaved --spec '{"backbone": "minilm", ...}'
    python -m bench.worker tta --spec '{...}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import torch

from bench.common import peak_rss_mb, rss_mb


def _setup_and_data(spec: dict[str, Any]) -> tuple[Any, Any]:
    """The spec's `StepSetup` and its task data (seed 0, as every contender draws it)."""
    from bench.contenders import StepSetup
    from tasks.load import DataArgs, load_data

    data = load_data(DataArgs(dataset=spec["dataset"], max_train=spec.get("max_train"), seed=0))
    return StepSetup(**spec["setup"]), data


def step(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-step times, tokens per step and memory of one contender on one setup."""
    from bench.contenders import batch_sequence, real_tokens, run_hf, run_ours
    from continual.backbones import load_backbone, locate

    rss_start = rss_mb()
    setup, data = _setup_and_data(spec)
    loaded: dict[str, float] = {}

    def after_load() -> None:
        loaded["rss"] = rss_mb()

    if spec["contender"] == "ours":
        bb = load_backbone(spec["backbone"])
        after_load()
        times, trainable = run_ours(bb, data, setup)
    else:  # PEFT and full fine-tuning load their own model; ours is never loaded here
        bb = locate(spec["backbone"])
        times, trainable = run_hf(
            bb, data, setup, peft=spec["contender"] == "peft", after_load=after_load
        )
    limits = setup.train_config().limits
    seq = batch_sequence(data, setup)[setup.warmup :]
    tokens = statistics.mean(real_tokens(bb, data.spec, chunk, limits) for chunk in seq)
    return {
        "step_seconds": times,
        "median_step_seconds": statistics.median(times),
        "tokens_per_step": tokens,
        "examples_per_step": setup.batch_size,
        "trainable_params": trainable,
        "rss_start_mb": rss_start,
        "rss_loaded_mb": loaded.get("rss"),
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }


def interleaved(spec: dict[str, Any]) -> dict[str, Any]:
    """Step times of the three contenders interleaved step by step in this one process."""
    from bench.contenders import run_interleaved
    from continual.backbones import load_backbone

    setup, data = _setup_and_data(spec)
    times = run_interleaved(load_backbone(spec["backbone"]), data, setup)
    return {"step_seconds": times, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["step", "interleaved", "tta", "method_memory"])
    ap.add_argument("--spec", required=True)
    a = ap.parse_args(argv)
    spec = json.loads(a.spec)
    if a.role == "step":
        out = step(spec)
    elif a.role == "interleaved":
        out = interleaved(spec)
    elif a.role == "method_memory":
        from bench.methods_run import memory

        out = memory(spec)
    else:
        from bench.time_to_accuracy import measure

        out = measure(spec)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
