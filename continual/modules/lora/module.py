"""The trainable LoRA module: per target layer a `[rank, in]` A (random, as PEFT starts it) and
a `[out, rank]` B (zero, so the backbone's outputs are unchanged before training), or exactly
the given tensors when started from some."""

from __future__ import annotations

import math

import torch
from torch import nn

from continual.modules.lora.config import LoraConfig, names


class TrainableLora(nn.Module):
    """Every target's A and B as parameters; `forward()` and `eject()` give the named tensors."""

    def __init__(
        self, config: LoraConfig, *, start: dict[str, torch.Tensor] | None = None, seed: int = 0
    ):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        self.a = nn.ParameterList()
        self.b = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(config.dims):
            if start is not None:
                a_name, b_name = names(i)
                a = start[a_name].detach().clone().float()
                b = start[b_name].detach().clone().float()
            else:  # kaiming-uniform with a = sqrt(5), as nn.Linear and PEFT initialise A
                bound = 1.0 / math.sqrt(fan_in)
                a = torch.empty(config.rank, fan_in).uniform_(-bound, bound, generator=gen)
                b = torch.zeros(fan_out, config.rank)
            self.a.append(nn.Parameter(a))
            self.b.append(nn.Parameter(b))

    def forward(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, (a, b) in enumerate(zip(self.a, self.b, strict=True)):
            a_name, b_name = names(i)
            out[a_name], out[b_name] = a, b
        return out

    @torch.no_grad()
    def eject(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().contiguous() for k, v in self.forward().items()}

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
