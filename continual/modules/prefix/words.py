"""The paper's real-word start for a prefix: the backbone's own keys and values for a text."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from continual.backbones import Backbone
from continual.cache import with_cache
from continual.modules.prefix.config import PrefixConfig


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
    input_ids = torch.tensor([ids], device=backbone.device)
    backbone.model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        use_cache=True,
        **with_cache(backbone.model, cache),
    )
    layers = []
    for layer in cache.layers[: config.layers]:
        k, v = layer.keys[0], layer.values[0]  # [kv_heads, P, head_dim]
        layers.append(torch.stack([k, v]))  # [2, kv_heads, P, head_dim]
    stacked = torch.stack(layers)  # [layers, 2, kv_heads, P, head_dim]
    flat = stacked.permute(3, 0, 1, 2, 4).reshape(config.length, config.flat_dim)
    return flat.float().cpu().contiguous()  # a start: float32 on the CPU, like any stored one
