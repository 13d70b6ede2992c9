"""The prefix module kind ("prefix"): config, trainable module, per-row layout for mixed-task
batches, packed-pass banks and the real-word start. Registers itself on import."""

from continual.modules.base import register_module
from continual.modules.prefix.config import PrefixConfig, check_flat
from continual.modules.prefix.module import TrainablePrefix
from continual.modules.prefix.plugin import DEFAULT_POSITIONS, PrefixModule
from continual.modules.prefix.rows import RowPrefix, single, stack_rows
from continual.modules.prefix.words import word_activations

PREFIX = register_module(PrefixModule())

__all__ = [
    "DEFAULT_POSITIONS",
    "PREFIX",
    "PrefixConfig",
    "PrefixModule",
    "RowPrefix",
    "TrainablePrefix",
    "check_flat",
    "single",
    "stack_rows",
    "word_activations",
]
