"""Per-row LoRA updates of one batch: each target layer's output gains `(alpha / rank) * B_t
A_t x` for the task t of each token (`continual.modules.hooked.RowHooks` gathers each task's
tokens, so rows of different tasks, of any ranks, share one pass)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from continual.modules.hooked import RowHooks, stack
from continual.modules.lora.config import KIND, LoraConfig, names
from tasks.errors import ConfigError


def _update(layer: nn.Module, x: torch.Tensor, out: torch.Tensor, ab) -> torch.Tensor:
    a, b = ab
    return out + (x @ a.to(device=x.device, dtype=x.dtype).T) @ b.to(x.device, x.dtype).T


def stack_rows(
    parts: Sequence[tuple[dict[str, torch.Tensor], LoraConfig]], row_task: torch.Tensor
) -> RowHooks:
    """Per-row LoRA updates for a batch whose rows may belong to different tasks (one
    (tensors, config) per task; `row_task` `[B]` each row's index into `parts`)."""
    first = parts[0][1]
    if any(c.dims != first.dims for _, c in parts):
        raise ConfigError(
            "lora modules of one batch must target the same layers of the same backbone"
        )
    per_task = []
    for tensors, c in parts:
        pairs = [names(i) for i in range(len(c.targets))]
        per_task.append(([(tensors[a], tensors[b] * c.scale) for a, b in pairs], c))
    return stack(KIND, first.targets, per_task, row_task, _update)


def single(tensors: dict[str, torch.Tensor], config: LoraConfig, batch_size: int) -> RowHooks:
    """The same LoRA on every row (training, single-task evaluation); gradients reach
    `tensors`."""
    return stack_rows([(tensors, config)], torch.zeros(batch_size, dtype=torch.long))
