"""A frozen backbone's weights: freezing them, their fingerprint (sha256 of every tensor, taken
once per load) and their version counters (the in-place check that needs no copy)."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn


def weight_versions(model: nn.Module) -> tuple[int, ...]:
    """Every parameter's and buffer's version counter, in name order."""
    return tuple(t._version for _, t in sorted(model.state_dict(keep_vars=True).items()))


def fingerprint(model: nn.Module) -> str:
    """sha256 over every tensor of the model (parameters and buffers) in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        if t.numel():  # hashed in place: a bytes copy of every tensor stayed resident (~86 MB)
            h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
