"""What each optimization of our training step gained: the step with one change undone at a
time, and with all of them undone ("before"), side by side in one process, alternating.

    python -m bench.ablation             # minilm (trec, imdb) and smollm2 (sms_spam)
    python -m bench.ablation --quick     # minilm/trec, a few steps (what a test runs)

Variants (each undoes one thing; the code of the undone version lives here, not in the product):
- `all`: the product as shipped;
- `padded`: right/left-padded batches instead of packed passes (`continual.packing`);
- `torch-dropout`: torch's `nn.Dropout` in the frozen backbone instead of `FastDropout`;
- `foreach-adamw`: torch's default multi-tensor AdamW instead of the fused one;
- `padded+gathered-prefix`: on top of `padded`, a gathered `[B, P, flat]` copy of the prefix per
  step and per-layer indexing of it (the first version), instead of an expand and `unbind`;
- `padded+sliced-head`: on top of `padded`, the language-model head on a sliced (non-contiguous)
  view, which transformers runs as a batched matmul against an expanded weight;
- `sdpa-attention`: transformers' SDPA attention (torch's dropout on attention probabilities)
  instead of `continual.kernels.attention`;
- `eager-attention`: transformers' eager attention;
- `one-thread`: `torch.set_num_threads(1)` instead of the default (one per core);
- `before`: padded, gathered prefix, sliced head, torch dropout and SDPA attention, foreach
  AdamW.

Each setup first runs two untimed steps (first-use costs of the process), then the rounds.
Prints a table (median step time and its ratio to `all`) and writes bench/results/ablation.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.common import machine, table, write
from bench.contenders import StepSetup, run_ours

SETUPS = {
    "minilm-trec-64": ("minilm", "trec", 16, 64, None),
    "minilm-imdb-128": ("minilm", "imdb", 16, 128, 4000),
    "smollm2-sms_spam-64": ("smollm2", "sms_spam", 8, 64, None),
}
FULL = {
    "minilm-trec-64": {"rounds": 3, "warmup": 2, "steps": 12},
    "minilm-imdb-128": {"rounds": 4, "warmup": 1, "steps": 8},
    "smollm2-sms_spam-64": {"rounds": 2, "warmup": 1, "steps": 4},
}
QUICK = {"minilm-trec-64": {"rounds": 1, "warmup": 1, "steps": 2, "head_init": "random"}}
VARIANTS = (
    "all",
    "padded",
    "torch-dropout",
    "foreach-adamw",
    "padded+gathered-prefix",
    "padded+sliced-head",
    "sdpa-attention",
    "eager-attention",
    "one-thread",
    "before",
)


def _gathered_past(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `RowPrefix.past`: indexing per layer (its backward zero-fills the whole prefix
    gradient once per index)."""
    b, p, _ = self.rows.shape
    view = self.rows.view(b, p, self.layers, 2, self.kv_heads, self.head_dim)
    view = view.permute(2, 3, 0, 4, 1, 5)
    return [(view[i, 0], view[i, 1]) for i in range(self.layers)]


def _gathered_single(prefix, config, batch_size):
    """The first `single`: a gathered copy of the prefix for every row."""
    from continual.modules.prefix import stack_rows

    rows = stack_rows([(prefix, config)], torch.zeros(batch_size, dtype=torch.long))
    return replace(rows, bank=None, task=None)


@contextlib.contextmanager
def undone(bb, variant: str) -> Iterator[None]:
    """Undo the optimizations `variant` names, for the duration of the block."""
    import continual.modules.prefix.plugin as prefix_plugin
    import continual.objectives.decoder as decoder_mod
    import continual.packing as packing_mod
    import continual.train.run as train_mod
    from continual.kernels import FastDropout
    from continual.modules.prefix import RowPrefix

    parts = set(variant.split("+"))
    if variant == "before":
        parts = {
            "padded",
            "gathered-prefix",
            "sliced-head",
            "torch-dropout",
            "foreach-adamw",
            "sdpa-attention",
        }
    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    if "padded" in parts:
        patch(packing_mod, "packable", lambda backbone: False)
    if "gathered-prefix" in parts:
        patch(RowPrefix, "past", _gathered_past)
        patch(prefix_plugin, "single", _gathered_single)
    if "sliced-head" in parts:
        patch(decoder_mod, "kept_positions", lambda width, keep: keep)
    if "foreach-adamw" in parts:
        patch(
            train_mod,
            "adamw",
            lambda params, *, lr, weight_decay: torch.optim.AdamW(
                params, lr=lr, weight_decay=weight_decay
            ),
        )
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    if "torch-dropout" in parts:
        for parent in bb.model.modules():
            for name, child in parent.named_children():
                if type(child) is FastDropout:
                    swapped.append((parent, name, child))
                    setattr(parent, name, nn.Dropout(child.p).train(child.training))
    impl = bb.model.config._attn_implementation
    if "eager-attention" in parts:
        _set_attention(bb.model, "eager")
    if "sdpa-attention" in parts:
        _set_attention(bb.model, "sdpa")
    threads = torch.get_num_threads()
    if "one-thread" in parts:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _set_attention(bb.model, impl)
        for parent, name, child in swapped:
            setattr(parent, name, child)
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def _set_attention(model: nn.Module, impl: str) -> None:
    for m in model.modules():
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = impl


def measure(name: str, plan: dict[str, Any]) -> dict[str, Any]:
    from continual.backbones import load_backbone
    from tasks.load import DataArgs, load_data

    backbone, dataset, batch, length, max_train = SETUPS[name]
    bb = load_backbone(backbone)
    data = load_data(DataArgs(dataset=dataset, max_train=max_train, seed=0))
    setup = StepSetup(
        batch_size=batch,
        max_length=length,
        prefix_length=16,
        warmup=plan["warmup"],
        steps=plan["steps"],
        head_init=plan.get("head_init", "probe"),
    )
    run_ours(bb, data, replace(setup, warmup=1, steps=2))  # untimed: first-use costs go here
    per: dict[str, list[float]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    for _ in range(plan["rounds"]):
        for v in order:
            with undone(bb, v):
                times, _ = run_ours(bb, data, setup)
            per[v].append(statistics.median(times))
        order = order[1:] + order[:1]
    med = {v: statistics.median(x) for v, x in per.items()}
    return {
        "backbone": backbone,
        "dataset": dataset,
        "batch_size": batch,
        "max_length": length,
        **plan,
        "median_step_seconds": med,
        "round_medians": per,
        "ratio_to_all": {v: med[v] / med["all"] for v in VARIANTS},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=sorted(SETUPS), action="append")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    plans = QUICK if a.quick else FULL
    began = time.perf_counter()
    doc: dict[str, Any] = {"bench": "ablation", "quick": a.quick, "machine": machine()}
    doc["setups"] = {n: measure(n, p) for n, p in plans.items() if not a.only or n in a.only}
    doc["seconds"] = time.perf_counter() - began
    path = write("ablation_quick" if a.quick else "ablation", doc, Path(a.out) if a.out else None)
    names = list(doc["setups"])
    rows = [
        [v]
        + [
            f"{1000 * doc['setups'][n]['median_step_seconds'][v]:.0f} ms "
            f"({doc['setups'][n]['ratio_to_all'][v]:.2f}x)"
            for n in names
        ]
        for v in VARIANTS
    ]
    print("our training step with one optimization undone (ratio to `all`)")
    print(table(["variant", *names], rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
