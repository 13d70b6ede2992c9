"""A backbone's shapes without its weights, for checking plans before any training.

A stream file's arrivals are checked against the backbone when the stream is queued, not when
each arrival's turn comes: a prefix longer than the context, a prompt that leaves the input no
room or a LoRA target the model lacks is then one line before anything trains, instead of an
error after the earlier arrivals have run. The module plugins' own `config_for` does the
checking, on a model built from the backbone's config on torch's meta device (shapes and
layer names, no weights read or allocated), so the rules are the ones training uses.
"""

from __future__ import annotations

from typing import Any

import torch

from continual.backbones import (
    Backbone,
    BackboneKind,
    first_line,
    geometry_of,
    locate,
    traits,
)
from tasks.errors import AssetError


class MetaLayers:
    """Stands in for a backbone's model: its `config` at once, and its layers, built on the
    meta device, on the first other attribute asked for. Building them imports the
    architecture's code (about 2 s in a fresh process), which the prefix's and the search's
    checks, reading only the config, never need; LoRA's, (IA)³'s and BitFit's do."""

    def __init__(self, name: str, config: Any, auto_class: str) -> None:
        self.config = config
        self._name, self._auto_class, self._model = name, auto_class, None

    @property
    def built(self) -> bool:
        return self._model is not None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # not the model's: no build for a private or special name
            raise AttributeError(attr)
        if self._model is None:
            import transformers

            try:
                with torch.device("meta"):
                    model = getattr(transformers, self._auto_class).from_config(self.config)
            except (OSError, ValueError) as e:
                raise AssetError(
                    f"backbone {self._name!r} could not be built: {first_line(e)}"
                ) from None
            self._model = model.eval()
        return getattr(self._model, attr)


def skeleton_backbone(name_or_path: str, *, kind: BackboneKind | None = None) -> Backbone:
    """`name_or_path`'s backbone with no weights: its config, geometry and tokenizer, and its
    layers on the meta device when a check asks for them (`MetaLayers`). For checks only: it
    cannot run, its fingerprint is empty and its parameters are not counted (`n_params` 0)."""
    found = locate(name_or_path, kind=kind)  # reads the config (and the tokenizer) once
    config = found.config
    layers: Any = MetaLayers(name_or_path, config, traits(found.kind).auto_class)
    return Backbone(
        name=found.name,
        source=found.source,
        kind=found.kind,
        model=layers,
        tokenizer=found.tokenizer,
        geometry=geometry_of(config),
        fingerprint="",
        n_params=0,
    )
