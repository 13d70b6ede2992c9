"""The key/value cache argument of transformers models, whichever name their version uses.

transformers 5.24 renamed the forward argument `past_key_values` to `cache` (the old name warns
until 5.40, then goes) and the output field likewise; these helpers pass and read it either way.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch


@functools.cache
def _cache_argument(model_class: type) -> str:
    """The name of a model's key/value-cache argument."""
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def with_cache(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """`{argument name: cache}` for `model`'s forward, whichever transformers names it."""
    return {_cache_argument(type(model)): cache}


def returned_cache(output: Any) -> Any:
    """The cache a forward with `use_cache=True` returned (`cache`, or `past_key_values`
    before transformers 5.24)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def place(past: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """A per-layer (key, value) cache on `device` in `dtype` (the backbone's): a task module keeps
    float32 master weights wherever it trains, and enters attention in the backbone's dtype.
    Tensors already there are returned as they are (no copy on CPU float32)."""
    return [(k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)) for k, v in past]


def on(device: torch.device, values: dict[str, Any]) -> dict[str, Any]:
    """`values` with every tensor moved to `device` (others as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
