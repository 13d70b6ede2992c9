"""Tiny random prefixes and the metadata around them, shared by the registry tests and the
worker processes of the concurrency test (which import this file by path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
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


WORKER = Path(__file__).with_name("registry_worker.py")
PER_WORKER = 4


def race(
    workspace: Path, db_url: str | None, *extra: str, tracking_uri: str | None = None
) -> list[list[int]]:
    """Start two workers, release them together, return the prefix ids each registered.
    `tracking_uri`: each mirrors its registrations to that MLflow store."""
    env = {**os.environ}
    if tracking_uri:
        env["CONTINUAL_TEST_TRACKING_URI"] = tracking_uri
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(workspace), db_url or "-", name, str(PER_WORKER)]
            + list(extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("alpha", "beta")
    ]
    try:
        for p in procs:  # both are ready; now release them together
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ids = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
        ids.append(json.loads(out.strip().splitlines()[-1]))
    return ids
