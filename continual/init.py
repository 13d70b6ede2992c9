"""Where a new prefix starts: a registry of init strategies, each returning a flat prefix
`[P, flat_dim]` (or None for the module's own random start).

- `random`: the reparameterized module's seeded random start.
- `words`: the paper's real-word init: the backbone's own keys and values for a text (the task's
  description by default), taken at its first P token positions.
- `tensor`: a given flat prefix (what similar-task inits build on).

Strategies are registered by name, with an error on a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from continual.backbones import Backbone
from continual.prefix import PrefixConfig, check_flat
from tasks.errors import ConfigError
from tasks.spec import TaskSpec


@dataclass(frozen=True)
class InitContext:
    """What a strategy may look at: the backbone, the new task and the prefix's shape."""

    backbone: Backbone
    spec: TaskSpec
    config: PrefixConfig
    options: dict[str, Any]


Strategy = Callable[[InitContext], torch.Tensor | None]
_STRATEGIES: dict[str, Strategy] = {}


def register_init(name: str) -> Callable[[Strategy], Strategy]:
    def add(fn: Strategy) -> Strategy:
        if name in _STRATEGIES:
            raise ConfigError(f"init strategy {name!r} is registered twice")
        _STRATEGIES[name] = fn
        return fn

    return add


def strategies() -> list[str]:
    return sorted(_STRATEGIES)


def initial_prefix(name: str, ctx: InitContext) -> torch.Tensor | None:
    """Run strategy `name`; returns a flat prefix checked against `ctx.config`, or None."""
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown --init {name!r}; choose one of {', '.join(strategies())}")
    out = _STRATEGIES[name](ctx)
    return None if out is None else check_flat(out, ctx.config)


@torch.no_grad()
def word_activations(backbone: Backbone, text: str, config: PrefixConfig) -> torch.Tensor:
    """The backbone's keys and values for `text` at its first P positions, flat `[P, flat_dim]`.

    The text is repeated until it has P tokens. Keys and values are collected by handing the
    model an empty cache, which every attention layer appends to (encoders included).
    """
    tok = backbone.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"] or [tok.unk_token_id or 0]
    ids = (ids * (config.length // len(ids) + 1))[: config.length]
    cache = DynamicCache()
    input_ids = torch.tensor([ids])
    backbone.model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        past_key_values=cache,
        use_cache=True,
    )
    layers = []
    for layer in cache.layers[: config.layers]:
        k, v = layer.keys[0], layer.values[0]  # [kv_heads, P, head_dim]
        layers.append(torch.stack([k, v]))  # [2, kv_heads, P, head_dim]
    stacked = torch.stack(layers)  # [layers, 2, kv_heads, P, head_dim]
    flat = stacked.permute(3, 0, 1, 2, 4).reshape(config.length, config.flat_dim)
    return flat.float().contiguous()


@register_init("random")
def _random(ctx: InitContext) -> None:
    return None


@register_init("words")
def _words(ctx: InitContext) -> torch.Tensor:
    text = ctx.options.get("text") or ctx.spec.description or " ".join(ctx.spec.labels)
    if not text.strip():
        raise ConfigError(f"task {ctx.spec.name}: --init words needs a description (--description)")
    return word_activations(ctx.backbone, text, ctx.config)


@register_init("tensor")
def _tensor(ctx: InitContext) -> torch.Tensor:
    tensor = ctx.options.get("tensor")
    if tensor is None:
        raise ConfigError("--init tensor needs a prefix tensor")
    return torch.as_tensor(tensor).float()
