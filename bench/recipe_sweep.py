"""Sweep the prefix recipe on catalog tasks (where defaults are tuned; never the held-out suite).

    python -m bench.recipe_sweep --tasks imdb news20 --variant base: --variant lr3:lr=3e-3 \
        --variant P32:P=32 --variant ft:ft=1,lr=5e-5

A variant is `NAME:key=value,...` over `TrainConfig` fields, plus `P` (prefix length),
`reparam` (the MLP's hidden width), `probe_C` (the inverse regularization of the probe that
starts the head; smaller is a softer start), `dropout` (the frozen backbone's dropout rate while
the prefix trains, 0 = off; the default keeps the backbone's own, as PEFT does) and `ft=1` (full
fine-tuning of a copy of the backbone instead of a prefix). Same data caps as
`bench.prefix_quality --suite` (2,000 train, 500 eval), minilm, 400 steps x 16 unless a variant
says otherwise. Results are merged into
bench/results/recipe_sweep.json (task -> variant -> score), so runs can be added one at a time.
Held-out tasks are refused unless `--check` is given: then the variants (chosen on the catalog
beforehand) are tried on them and the results go to bench/results/recipe_check.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from torch import nn

from bench.common import machine
from bench.quality_compare import HELDOUT, MAX_EVAL, MAX_TRAIN
from continual import probe
from continual.backbones import load_backbone
from continual.finetune import evaluate_plain, finetune, fresh_head, trainable_copy
from continual.inference import evaluate
from continual.modules.prefix import prefix_config_for
from continual.train import TrainConfig, train
from tasks import catalog

OUT = Path(__file__).resolve().parent / "results" / "recipe_sweep.json"
#: Where `--check` writes: variants chosen on the catalog, tried on the held-out suite.
CHECK = OUT.with_name("recipe_check.json")


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    pairs = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name, pairs


@contextmanager
def backbone_dropout(bb, p: str | None):
    """Run with every dropout of the frozen backbone at rate `p` (None: as it is), then restore.
    BERT's attention dropout reads its `nn.Dropout`'s rate too, so one sweep covers both."""
    saved = {m: m.p for m in bb.model.modules() if isinstance(m, nn.Dropout)}
    if p is not None:
        for m in saved:
            m.p = float(p)
    try:
        yield
    finally:
        for m, rate in saved.items():
            m.p = rate


def run(bb, data, pairs: dict[str, str]) -> dict:
    with backbone_dropout(bb, pairs.get("dropout")):
        return _run(bb, data, pairs)


def _run(bb, data, pairs: dict[str, str]) -> dict:
    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(
        **{k: type(getattr(TrainConfig(), k))(v) for k, v in pairs.items() if k in fields}
    )
    began = time.perf_counter()
    if pairs.get("ft"):
        copy = trainable_copy(bb)
        head = fresh_head(copy, data.spec, config.seed)
        r = finetune(copy, head, data, config, progress=False)
        s = evaluate_plain(copy, head, data.spec, data.eval, batch_size=32, limits=config.limits)
        return {"score": s.score, "best_step": r.best_step, "seconds": time.perf_counter() - began}
    pconfig = prefix_config_for(bb, int(pairs.get("P", 16)), pairs.get("positions"))
    if "reparam" in pairs:
        pconfig = pconfig.with_(reparam_hidden=int(pairs["reparam"]))
    default_c = probe.PROBE_C
    probe.PROBE_C = float(pairs.get("probe_C", default_c))
    try:
        r = train(bb, data, pconfig, config, progress=False)
    finally:
        probe.PROBE_C = default_c
    s = evaluate(bb, r.task, data.eval, batch_size=config.eval_batch_size)
    return {
        "score": s.score,
        "best_step": r.best_step,
        "final_loss": r.final_loss,
        "validations": r.validations,
        "seconds": time.perf_counter() - began,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help=f"default {OUT.name}, with --check {CHECK.name}")
    ap.add_argument(
        "--check",
        action="store_true",
        help="check variants already chosen on the catalog on held-out tasks (never tune here)",
    )
    a = ap.parse_args()
    leaked = sorted(set(a.tasks) & set(HELDOUT))
    if leaked and not a.check:
        raise SystemExit(f"recipe_sweep: {leaked} are held-out tasks; tune on the catalog only")
    out = Path(a.out or (CHECK if a.check else OUT))
    doc = json.loads(out.read_text()) if out.exists() else {"tasks": {}}
    doc["machine"] = machine()
    bb = load_backbone("minilm")
    for task in a.tasks:
        data = catalog.load(task, max_train=MAX_TRAIN, seed=a.seed)
        data = replace(data, eval=data.eval[:MAX_EVAL])
        for v in a.variant:
            name, pairs = parse_variant(v)
            if a.seed:
                pairs = {**pairs, "seed": str(a.seed)}
                name = f"{name}@s{a.seed}"
            got = run(bb, data, pairs)
            doc["tasks"].setdefault(task, {})[name] = {**got, "variant": pairs}
            print(
                f"{task:16} {name:14} {100 * got['score']:6.1f}  {got['seconds']:6.0f}s", flush=True
            )
            out.write_text(json.dumps(doc, indent=1) + "\n")
    names = sorted({n for t in doc["tasks"].values() for n in t})
    print(f"{'task':16} " + " ".join(f"{n:>10}" for n in names))
    for task, got in doc["tasks"].items():
        cells = [f"{100 * got[n]['score']:10.1f}" if n in got else " " * 10 for n in names]
        print(f"{task:16} " + " ".join(cells))
    full = [n for n in names if all(n in t for t in doc["tasks"].values())]
    for n in full:
        print(
            f"mean {n}: {100 * statistics.fmean(t[n]['score'] for t in doc['tasks'].values()):.1f}"
        )


if __name__ == "__main__":
    main()
