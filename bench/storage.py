"""Bytes stored per task against the backbone's bytes, as files on disk.

    python -m bench.storage

Per backbone (P = 16): our registry artifact (prefix and, on encoders, the task head, as the
safetensors file `registry/artifacts.py` writes), a PEFT prefix-tuning adapter saved by
`save_pretrained` (its `adapter_model.safetensors`), and what full fine-tuning keeps per task (a
whole model's safetensors). Prints a table and writes bench/results/storage.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.common import machine, table, write


def measure(name: str, labels: int = 6) -> dict[str, Any]:
    from continual.backbones import load_backbone
    from continual.finetune import fresh_head
    from continual.modules import build
    from continual.modules.prefix import prefix_config_for
    from registry.artifacts import tensors_to_bytes
    from tasks.spec import TaskSpec

    bb = load_backbone(name)
    config = prefix_config_for(bb, 16, None)
    tensors = build(config).eject()
    spec = TaskSpec(
        name="size", kind="classification", labels=tuple(f"l{i}" for i in range(labels))
    )
    head = fresh_head(bb, spec, 0)
    if head is not None:
        tensors.update(head.tensors())
    ours = len(tensors_to_bytes(tensors, {"format": "pt"}))
    with tempfile.TemporaryDirectory() as d:
        import transformers
        from peft import PrefixTuningConfig, get_peft_model

        loader = getattr(transformers, bb.traits.auto_class)
        base = loader.from_pretrained(bb.source, dtype=torch.float32)
        peft = get_peft_model(
            base,
            PrefixTuningConfig(
                task_type="CAUSAL_LM" if bb.kind == "decoder" else "FEATURE_EXTRACTION",
                num_virtual_tokens=16,
                prefix_projection=True,
                encoder_hidden_size=512,
            ),
        )
        peft.save_pretrained(d)
        theirs = (Path(d) / "adapter_model.safetensors").stat().st_size
        bb.model.save_pretrained(Path(d) / "full")  # what a fine-tuned copy per task keeps
        full = sum(f.stat().st_size for f in (Path(d) / "full").glob("*.safetensors"))
    return {
        "backbone_bytes": bb.n_bytes,
        "ours_bytes": ours,
        "peft_adapter_bytes": theirs,
        "full_finetune_bytes": full,
        "ours_fraction_of_backbone": ours / bb.n_bytes,
        "prefix_numbers": config.n_params,
        "head_labels": labels if head is not None else 0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["minilm", "smollm2"], action="append")
    ap.add_argument("--quick", action="store_true", help="minilm only")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    names = a.only or (["minilm"] if a.quick else ["minilm", "smollm2"])
    doc = {"bench": "storage", "machine": machine(), "backbones": {n: measure(n) for n in names}}
    path = write("storage_quick" if a.quick else "storage", doc, Path(a.out) if a.out else None)
    rows = [
        [
            n,
            r["backbone_bytes"] / 1e6,
            f"{r['ours_bytes'] / 1e3:.0f} kB",
            f"{100 * r['ours_fraction_of_backbone']:.2f}%",
            f"{r['peft_adapter_bytes'] / 1e3:.0f} kB",
            f"{r['full_finetune_bytes'] / 1e6:.1f} MB",
        ]
        for n, r in doc["backbones"].items()
    ]
    head = [
        "backbone",
        "backbone MB",
        "ours / task",
        "of backbone",
        "PEFT / task",
        "full FT / task",
    ]
    print("bytes stored per task (P = 16)\n" + table(head, rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
