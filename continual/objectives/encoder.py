"""Encoder plumbing shared by encoder objectives: tokenized batches and mean-pooled features
`[B, H]` of texts under their rows' modules, in one packed pass where the attention allows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from continual import packing
from continual.backbones import Backbone
from continual.model import Batch, forward, has_inputs, mean_pool
from continual.modules.base import RowModules
from continual.objectives.base import TextLimits


def encoder_batch(backbone: Backbone, texts: Sequence[str], limits: TextLimits) -> Batch:
    enc = backbone.tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=limits.max_length,
        return_tensors="pt",
    )
    return Batch(enc["input_ids"], enc["attention_mask"])


def encoder_features(
    backbone: Backbone,
    texts: Sequence[str],
    modules: RowModules | None,
    limits: TextLimits,
) -> torch.Tensor:
    """Mean-pooled last hidden states `[B, H]` of the texts under their rows' modules, in one
    packed pass (no padding computed; `continual.packing`) where the attention and the modules
    allow it (a soft prompt's input tokens run padded)."""
    if not packing.packable(backbone) or has_inputs(modules):
        batch = encoder_batch(backbone, texts, limits)
        hidden = forward(backbone, batch, modules).last_hidden_state
        return mean_pool(hidden, batch.attention_mask).float()
    seqs = backbone.tokenizer(list(texts), truncation=True, max_length=limits.max_length)
    seqs = seqs["input_ids"]
    first = [0] * len(seqs) if modules is None else modules.offset.tolist()
    groups = None if modules is None else modules.groups().tolist()
    packed = packing.pack(seqs, first, backbone.tokenizer.pad_token_id or 0, groups=groups)
    hidden = packing.run(backbone, packed, modules, causal=False).last_hidden_state
    return packing.segment_mean(hidden, packed).float()  # heads run in float32


@torch.no_grad()
def features(
    backbone: Backbone,
    texts: Sequence[str],
    rows_of: Callable[[int], RowModules | None],
    limits: TextLimits,
    batch_size: int = 32,
) -> torch.Tensor:
    """Pooled features `[N, H]` of `texts` in eval mode; `rows_of(n)` gives the rows' modules."""
    was_training = backbone.model.training
    backbone.model.eval()
    try:
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i : i + batch_size])
            out.append(encoder_features(backbone, chunk, rows_of(len(chunk)), limits))
        return torch.cat(out)
    finally:
        backbone.model.train(was_training)
