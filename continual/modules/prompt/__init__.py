"""The prompt-tuning kind ("prompt", Lester et al. 2021): soft input tokens per task. Registers
itself on import."""

from __future__ import annotations

from continual.modules.base import register_module
from continual.modules.prompt.config import LENGTH, PromptConfig
from continual.modules.prompt.plugin import PromptModule, TrainablePrompt
from continual.modules.prompt.rows import RowPrompt

PROMPT = register_module(PromptModule())

__all__ = ["LENGTH", "PROMPT", "PromptConfig", "PromptModule", "RowPrompt", "TrainablePrompt"]
