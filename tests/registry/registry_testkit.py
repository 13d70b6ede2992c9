"""Tiny random prefixes and the metadata around them, shared by the registry tests and the
worker processes of the concurrency test (which import this file by path)."""

from __future__ import annotations

from typing import Any

import torch

from registry import PrefixRecord, Registry
from tasks.spec import TaskSpec

FINGERPRINT = "f" * 64
GEOMETRY = {"length": 4, "layers": 2, "kv_heads": 2, "head_dim": 4}
FLAT = GEOMETRY["layers"] * 2 * GEOMETRY["kv_heads"] * GEOMETRY["head_dim"]


def backbone(fingerprint: str = FINGERPRINT) -> dict[str, Any]:
    return {
        "name": "tiny-random",
        "source": "test",
        "fingerprint": fingerprint,
        "n_params": 12_345,
        "config": {"layers": 2, "hidden_size": 16},
    }


def spec(name: str, kind: str = "classification", **changes: Any) -> TaskSpec:
    labels = ("yes", "no") if kind == "classification" else ()
    return TaskSpec(name=name, kind=kind, labels=labels, **changes)


def prefix_config(**changes: Any) -> dict[str, Any]:
    return {**GEOMETRY, "hidden_size": 16, "positions": "shifted", "reparam_hidden": 8, **changes}


def tensors(seed: int = 0, head: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"prefix": torch.randn(GEOMETRY["length"], FLAT, generator=g)}
    if head:
        out["head.weight"] = torch.randn(2, 16, generator=g)
        out["head.bias"] = torch.zeros(2)
    return out


def register(
    reg: Registry,
    name: str,
    *,
    seed: int = 0,
    new_version: bool = False,
    lineage: list[tuple[int, float, str]] | None = None,
    kind: str = "classification",
    evaluation: dict[str, Any] | None = None,
    optimizer: bool = False,
    fingerprint: str = FINGERPRINT,
    **overrides: Any,
) -> PrefixRecord:
    """Register a tiny random prefix for task `name` with plausible metadata."""
    args: dict[str, Any] = {
        "task": spec(name, kind),
        "data_fingerprint": "d" * 64,
        "backbone": backbone(fingerprint),
        "tensors": tensors(seed),
        "prefix_config": prefix_config(),
        "train_summary": {
            "steps": 3,
            "seconds": 0.25,
            "final_loss": 0.5,
            "losses": [1.5, 1.0, 0.5],
        },
        "lineage": lineage or [],
        "run": {
            "seed": seed,
            "config": {"lr": 0.001, "steps": 3},
            "packages": {"torch": torch.__version__},
            "backbone_fingerprint": fingerprint,
        },
        "evaluation": evaluation
        if evaluation is not None
        else {"metric": "accuracy", "value": 0.75, "n": 8, "predictions_sha256": "e" * 64},
        "optimizer_state": {"exp_avg": torch.ones(3)} if optimizer else None,
        "new_version": new_version,
    }
    args.update(overrides)
    return reg.register_prefix(**args)
