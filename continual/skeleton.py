"""A backbone's shapes without its weights, for checking plans before any training.

A stream file's arrivals are checked against the backbone when the stream is queued, not when
each arrival's turn comes: a prefix longer than the context, a prompt that leaves the input no
room or a LoRA target the model lacks is then one line before anything trains, instead of an
error after the earlier arrivals have run. The module plugins' own `config_for` does the
checking, on a model built from the backbone's config on torch's meta device (shapes and
layer names, no weights read or allocated), so the rules are the ones training uses.
"""

from __future__ import annotations

import torch

from continual.backbones import Backbone, BackboneKind, geometry_of, locate, traits
from tasks.errors import AssetError


def skeleton_backbone(name_or_path: str, *, kind: BackboneKind | None = None) -> Backbone:
    """`name_or_path`'s backbone with every tensor on the meta device: its config, layers,
    geometry and tokenizer, for checks only (it cannot run; its fingerprint is empty)."""
    import transformers
    from transformers import AutoConfig

    found = locate(name_or_path, kind=kind)
    try:
        config = AutoConfig.from_pretrained(found.where)
        with torch.device("meta"):
            model = getattr(transformers, traits(found.kind).auto_class).from_config(config)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AssetError(f"backbone {name_or_path!r} could not be read: {first}") from None
    return Backbone(
        name=found.name,
        source=found.source,
        kind=found.kind,
        model=model.eval(),
        tokenizer=found.tokenizer,
        geometry=geometry_of(model.config),
        fingerprint="",
        n_params=sum(p.numel() for p in model.parameters()),
    )
