"""Analytic FLOPs of one training step of a prefix on a frozen backbone (what must be computed,
padding and masked-out attention pairs not counted). One multiply-add is 2 FLOPs.

Forward: every linear layer of every layer on every real token; attention scores and mixing
over the prefix and the token's own sequence (causal on decoders); the language-model head on
the scored positions only (decoders); the prefix's MLP reparameterization.
Backward: the frozen weights get no gradient, so each linear layer costs one more matmul, for
the gradient of its input, except where no gradient flows: layer 0's query/key/value
projections (their input, the embeddings, needs none). Attention's backward is counted as twice
its forward (scores and values), the MLP reparameterization's as twice its forward (weights and
inputs both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """What the count needs of a backbone."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    gated: bool  # Llama-style gate/up/down MLP (3 matrices) or BERT's up/down (2)
    vocab: int
    causal: bool

    @classmethod
    def of(cls, backbone) -> Shape:
        c = backbone.model.config
        g = backbone.geometry
        return cls(
            layers=g.layers,
            hidden=g.hidden_size,
            heads=g.heads,
            kv_heads=g.kv_heads,
            head_dim=g.head_dim,
            intermediate=int(c.intermediate_size),
            gated=getattr(c, "hidden_act", "") == "silu" or "llama" in c.model_type,
            vocab=int(c.vocab_size),
            causal=backbone.traits.causal,
        )

    @property
    def qkv_macs(self) -> int:
        return self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim

    @property
    def rest_macs(self) -> int:
        """Output projection and MLP, per token."""
        mlp = (3 if self.gated else 2) * self.hidden * self.intermediate
        return self.heads * self.head_dim * self.hidden + mlp


def train_step_flops(
    shape: Shape,
    seq_lengths: Sequence[int],
    *,
    prefix_length: int,
    scored_positions: int,
    reparam_hidden: int = 512,
    reparam_in: int | None = None,
) -> dict[str, float]:
    """FLOPs of one step by part, and their total, for sequences of `seq_lengths` tokens."""
    n = sum(seq_lengths)
    linear_fwd = 2 * n * shape.layers * (shape.qkv_macs + shape.rest_macs)
    linear_bwd = linear_fwd - 2 * n * shape.qkv_macs  # layer 0's q/k/v get no input gradient
    pairs = 0
    for t in seq_lengths:
        seen = t * (t + 1) // 2 if shape.causal else t * t
        pairs += seen + t * prefix_length
    attn_fwd = 2 * 2 * pairs * shape.heads * shape.head_dim * shape.layers
    head_fwd = 2 * scored_positions * shape.hidden * shape.vocab if shape.causal else 0
    flat = shape.layers * 2 * shape.kv_heads * shape.head_dim
    rin = reparam_in or shape.hidden
    reparam_fwd = 2 * prefix_length * (rin * reparam_hidden + reparam_hidden * flat)
    parts = {
        "linear_forward": float(linear_fwd),
        "linear_backward": float(linear_bwd),
        "attention_forward": float(attn_fwd),
        "attention_backward": float(2 * attn_fwd),
        "lm_head_forward": float(head_fwd),
        "lm_head_backward": float(head_fwd),
        "reparam_forward_backward": float(3 * reparam_fwd),
    }
    parts["total"] = sum(parts.values())
    return parts
