"""A training run's resumable state as flat named tensors (what the registry stores beside a
task's module) and back."""

from __future__ import annotations

from typing import Any

import torch


def flatten_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A `TrainResult.state` as flat named tensors (what the registry stores beside a prefix).

    Optimizer hyperparameters are not stored: a resumed run takes them from its own config.
    """
    flat = {f"module.{k}": v for k, v in state["module"].items()}
    flat.update({f"head.{k}": v for k, v in state.get("head", {}).items()})
    for index, slots in state.get("optimizer_slots", {}).items():
        for key, value in slots.items():
            flat[f"optim.{index}.{key}"] = torch.as_tensor(value)
    return {k: v.detach().contiguous() for k, v in flat.items()}


def unflatten_state(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The inverse of `flatten_state`."""
    module = {k[len("module.") :]: v for k, v in flat.items() if k.startswith("module.")}
    head = {k[len("head.") :]: v for k, v in flat.items() if k.startswith("head.")}
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        if k.startswith("optim."):
            _, index, key = k.split(".", 2)
            slots.setdefault(int(index), {})[key] = v
    return {"module": module, "head": head, "optimizer_slots": slots}
