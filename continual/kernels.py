"""CPU fast paths that keep the maths of what they replace.

`FastDropout` is `nn.Dropout` with a cheaper mask on CPU. torch draws one Mersenne-Twister number
per element for `bernoulli_`, which made dropout about 15% of a minilm training step on 2 cores
(the frozen backbone still runs dropout while a prefix trains, as PEFT's does). Here each 64-bit
draw yields four 16-bit uniforms: an element is kept when its uniform is at least
`round(p * 65536)`, so the drop rate is `p` to within 1/131072, elements are independent, and kept
values are scaled by `1 / (1 - p)` as `nn.Dropout` does. Other devices, and eval mode, use
`nn.Dropout` itself.

`attention` is scaled dot-product attention that does the same for attention-probability dropout:
in training, torch's SDPA on CPU falls back to its unfused maths and draws a Bernoulli per score
(`[B, heads, T, P+T]`: about 17% of a minilm step at 128 tokens). It is registered with
transformers as the attention implementation "continual" (masks as for "sdpa") and computes
softmax(QK^T/sqrt(d) + mask) with `keep_mask` dropout; without dropout (eval mode, decoders
such as Llama that have none, other devices) it calls transformers' own SDPA function, so
inference is bit-for-bit SDPA's. `python -m bench.ablation` measures both against torch's.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION = "continual"


def _uniform16(shape: torch.Size) -> torch.Tensor:
    """int16 uniforms over [-32768, 32767] of `shape`: four per 64-bit random number."""
    n = 1
    for d in shape:
        n *= int(d)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    return words.view(torch.int16)[:n].view(shape)


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability `1 - p` (CPU)."""
    return _uniform16(shape) >= (round(p * 65536) - 32768)


def drop_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """The complement of `keep_mask`: True with probability `p`."""
    return _uniform16(shape) < (round(p * 65536) - 32768)


class FastDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same scaling) with `keep_mask` on CPU in training mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1.0:
            return torch.zeros_like(x)
        return x * keep_mask(x.shape, self.p) * (1.0 / (1.0 - self.p))


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain `nn.Dropout` in `model` by a `FastDropout` of the same `p`; returns
    how many were replaced. Dropout holds no weights, so the model's fingerprint is unchanged."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Dropout
    ]
    for parent, name, child in swaps:  # a new module starts in training mode: keep the old one's
        setattr(parent, name, FastDropout(child.p).train(child.training))
    return len(swaps)


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: query `[B, H, T, D]`, key/value
    `[B, KV, S, D]`, mask `[B, 1, T, S]` (bool, True = attend) or None; returns `[B, T, H, D]`."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if (
        dropout == 0.0
        or query.device.type != "cpu"
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    # Scale the (smaller) query, not the scores; mask the scores in place (the matmul's backward
    # needs its inputs, not its output); drop with a bool mask (1 byte a score kept for the
    # backward); and apply 1/(1-p) to the output `[B, H, T, D]` rather than to `[B, H, T, S]`.
    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    t, s = scores.shape[-2], scores.shape[-1]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and causal and t > 1:  # as SDPA: no mask means causal if the layer is
        attention_mask = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(attention_mask)
    probs = scores.softmax(-1).masked_fill(drop_mask(scores.shape, dropout), 0.0)
    out = torch.matmul(probs, value) * (1.0 / (1.0 - dropout))
    return out.transpose(1, 2).contiguous(), None


def use_fast_attention(model: nn.Module) -> bool:
    """Switch a model that runs "sdpa" to "continual" (same masks, fast dropout in training).
    Returns whether it switched; models on other implementations are left alone."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(ATTENTION, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    try:
        model.set_attn_implementation(ATTENTION)
    except (ValueError, AttributeError):
        return False
    return getattr(model.config, "_attn_implementation", None) == ATTENTION
