"""Per-row LoRA updates of one batch (a `RowModules`): rows of different tasks share one pass.

Each target layer's output gains `(alpha / rank) * B_t A_t x` for the task t of each token.
With one task (training, single-task evaluation) that is two products over the whole input.
With several, the tokens of each task present are gathered and get their task's two products
(the way PEFT runs a batch of mixed adapters): a task's rows are computed the same whatever
else the batch holds, and tasks without rows in the batch cost nothing, however many the
layout holds. Ranks may differ between tasks. A LoRA adds no virtual positions: `mask` is
`[B, 0]`, `past()` is None, and a packed pass gets no extra columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from continual.modules.base import PackedModules
from continual.modules.lora.config import LoraConfig, names
from tasks.errors import ConfigError


@dataclass
class RowLora:
    """`a[t][i]` `[r_t, in]` and `b[t][i]` `[out, r_t]` (scaled by alpha / r_t) for task t and
    target `targets[i]`; `task` `[B]`: each row's task (0..n-1)."""

    targets: tuple[str, ...]
    a: list[list[torch.Tensor]]
    b: list[list[torch.Tensor]]
    task: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return torch.zeros(int(self.task.shape[0]), 0, dtype=torch.long)

    @property
    def offset(self) -> torch.Tensor:
        return torch.zeros(int(self.task.shape[0]), dtype=torch.long)

    def groups(self) -> torch.Tensor:
        return self.task

    def select(self, index: torch.Tensor) -> RowLora:
        return replace(self, task=self.task[index])

    def past(self) -> None:
        return None

    def packed(self, segment: torch.Tensor, row: torch.Tensor) -> PackedModules:
        r, width = segment.shape
        return PackedModules(torch.zeros(r, width, 0, dtype=torch.bool), None)

    @contextlib.contextmanager
    def hooks(self, model: nn.Module, token_row: torch.Tensor) -> Iterator[None]:
        handles = []
        try:
            for i, name in enumerate(self.targets):
                try:
                    layer = model.get_submodule(name)
                except AttributeError:
                    raise ConfigError(
                        f"lora target {name!r} is not a layer of this backbone; was the module "
                        "trained on another backbone?"
                    ) from None
                handles.append(layer.register_forward_hook(self._hook(i, token_row)))
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, i: int, token_row: torch.Tensor):
        a = [per_task[i] for per_task in self.a]
        b = [per_task[i] for per_task in self.b]
        task = self.task

        def add(layer: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            if tuple(x.shape[:-1]) != tuple(token_row.shape):
                raise RuntimeError(
                    f"lora: a call with inputs {tuple(x.shape[:-1])} under a token map "
                    f"{tuple(token_row.shape)}"
                )
            dev, dt = x.device, x.dtype
            rows = token_row.to(dev)
            owner = torch.where(rows >= 0, task.to(dev)[rows.clamp(min=0)], -1)
            if len(a) == 1:
                delta = (x @ a[0].to(device=dev, dtype=dt).T) @ b[0].to(device=dev, dtype=dt).T
                return output + delta * (owner >= 0).unsqueeze(-1).to(dt)
            flat, who = x.reshape(-1, x.shape[-1]), owner.reshape(-1)
            delta = torch.zeros(flat.shape[0], output.shape[-1], device=dev, dtype=dt)
            for t in torch.unique(who).tolist():
                if t < 0:
                    continue
                at = (who == t).nonzero().squeeze(1)
                part = (flat[at] @ a[t].to(device=dev, dtype=dt).T) @ b[t].to(dev, dt).T
                delta = delta.index_add(0, at, part)
            return output + delta.view(output.shape)

        return add


def stack_rows(parts: Sequence[tuple[dict[str, torch.Tensor], LoraConfig]], row_task) -> RowLora:
    """Per-row LoRA updates for a batch whose rows may belong to different tasks (one
    (tensors, config) per task; `row_task` `[B]` each row's index into `parts`)."""
    first = parts[0][1]
    for _, c in parts:
        if c.targets != first.targets or c.dims != first.dims:
            raise ConfigError(
                "LoRA modules of one batch must target the same layers of the same backbone"
            )
    a_all, b_all = [], []
    for tensors, c in parts:
        pairs = [names(i) for i in range(len(c.targets))]
        a_all.append([tensors[a] for a, _ in pairs])
        b_all.append([tensors[b] * c.scale for _, b in pairs])
    return RowLora(targets=first.targets, a=a_all, b=b_all, task=torch.as_tensor(row_task))


def single(tensors: dict[str, torch.Tensor], config: LoraConfig, batch_size: int) -> RowLora:
    """The same LoRA on every row (training, single-task evaluation); gradients reach
    `tensors`."""
    return stack_rows([(tensors, config)], torch.zeros(batch_size, dtype=torch.long))
