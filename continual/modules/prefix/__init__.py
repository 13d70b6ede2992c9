"""The prefix module kind ("prefix"): config, trainable module, per-row layout for mixed-task
batches, packed-pass banks and the real-word start. Registers itself on import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from continual.modules.base import register_module
from continual.modules.prefix.config import PrefixConfig, check_flat
from continual.modules.prefix.module import TrainablePrefix
from continual.modules.prefix.plugin import DEFAULT_POSITIONS, PrefixModule
from continual.modules.prefix.rows import RowPrefix, single, stack_rows
from continual.modules.prefix.words import word_activations

if TYPE_CHECKING:
    from continual.backbones import Backbone

PREFIX = register_module(PrefixModule())


def prefix_config_for(backbone: Backbone, length: int, positions: str | None) -> PrefixConfig:
    """A prefix of `length` for `backbone` (positions: the kind's default for the backbone's
    kind when None; see `DEFAULT_POSITIONS`)."""
    return PREFIX.config_for(backbone, length=length, positions=positions)


__all__ = [
    "DEFAULT_POSITIONS",
    "PREFIX",
    "PrefixConfig",
    "PrefixModule",
    "RowPrefix",
    "TrainablePrefix",
    "check_flat",
    "prefix_config_for",
    "single",
    "stack_rows",
    "word_activations",
]
