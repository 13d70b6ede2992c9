"""The LoRA module kind ("lora"): config, trainable module and per-row updates for mixed-task
batches. Registers itself on import."""

from __future__ import annotations

from continual.modules.base import register_module
from continual.modules.lora.config import LoraConfig
from continual.modules.lora.module import TrainableLora
from continual.modules.lora.plugin import TARGETS, LoraModule
from continual.modules.lora.rows import single, stack_rows

LORA = register_module(LoraModule())

__all__ = [
    "LORA",
    "TARGETS",
    "LoraConfig",
    "LoraModule",
    "TrainableLora",
    "single",
    "stack_rows",
]
