"""Per-row changes of layer outputs for one batch (a `RowModules` with no virtual positions).

A kind gives, per task and target layer, its tensors, and one function `change(layer, x, out,
tensors)`: the layer's new output for tokens of that task (x its input, out its output). With
one task (training, single-task evaluation) the change runs on the whole input; with several,
the tokens of each task present are gathered and changed by their own task's tensors (the way
PEFT runs a batch of mixed adapters), so a task's rows are computed the same whatever else the
batch holds, and tasks without rows in it cost nothing. Tokens of no row (-1) keep the plain
output. There are no virtual positions: `mask` is `[B, 0]`, `past()` None, and a packed pass
gets no extra columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from continual.modules.base import PackedModules
from tasks.errors import ConfigError

#: (layer, its input, its output, one task's tensors for it) -> the layer's new output.
Change = Callable[[nn.Module, torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass
class RowHooks:
    """`params[t][i]`: task t's tensors for target layer `targets[i]`; `task` `[B]`: each
    row's task (0..n-1); `change`: how tensors change a layer's output (see the module)."""

    kind: str
    targets: tuple[str, ...]
    params: list[list[Any]]
    task: torch.Tensor
    change: Change

    @property
    def mask(self) -> torch.Tensor:
        return torch.zeros(int(self.task.shape[0]), 0, dtype=torch.long)

    @property
    def offset(self) -> torch.Tensor:
        return torch.zeros(int(self.task.shape[0]), dtype=torch.long)

    def groups(self) -> torch.Tensor:
        return self.task

    def select(self, index: torch.Tensor) -> RowHooks:
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
                        f"{self.kind} target {name!r} is not a layer of this backbone; was the "
                        "module trained on another backbone?"
                    ) from None
                handles.append(layer.register_forward_hook(self._hook(i, token_row)))
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, i: int, token_row: torch.Tensor):
        mine = [per_task[i] for per_task in self.params]
        task, change = self.task, self.change

        def hook(layer: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            if tuple(x.shape[:-1]) != tuple(token_row.shape):
                raise RuntimeError(
                    f"{self.kind}: a call with inputs {tuple(x.shape[:-1])} under a token map "
                    f"{tuple(token_row.shape)}"
                )
            rows = token_row.to(x.device)
            owner = torch.where(rows >= 0, task.to(x.device)[rows.clamp(min=0)], -1)
            if len(mine) == 1:
                new = change(layer, x, output, mine[0])
                return torch.where((owner >= 0).unsqueeze(-1), new, output)
            flat_x, who = x.reshape(-1, x.shape[-1]), owner.reshape(-1)
            flat = output.reshape(-1, output.shape[-1])
            for t in torch.unique(who).tolist():
                if t >= 0:
                    at = (who == t).nonzero().squeeze(1)
                    flat = flat.index_copy(0, at, change(layer, flat_x[at], flat[at], mine[t]))
            return flat.view(output.shape)

        return hook


def stack(
    kind: str,
    targets: tuple[str, ...],
    parts: Sequence[tuple[list[Any], Any]],
    row_task: torch.Tensor,
    change: Change,
) -> RowHooks:
    """`RowHooks` for tasks whose configs must share `targets` (one (params per target, config)
    per task); `row_task` `[B]` each row's index into `parts`."""
    for _, c in parts:
        if tuple(c.targets) != tuple(targets):
            raise ConfigError(
                f"{kind} modules of one batch must target the same layers of the same backbone"
            )
    return RowHooks(kind, tuple(targets), [p for p, _ in parts], torch.as_tensor(row_task), change)
