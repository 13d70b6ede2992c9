"""The trainable module of kinds that learn one vector per target layer ((IA)³, BitFit)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class TrainableVectors(nn.Module):
    """One vector per target (`dims`), named `name(i)`, starting at `fill` everywhere (where the
    kind leaves the backbone unchanged) or exactly at the given tensors."""

    def __init__(
        self,
        dims: tuple[int, ...],
        name: Callable[[int], str],
        fill: float,
        start: dict[str, torch.Tensor] | None,
    ) -> None:
        super().__init__()
        self.name = name
        self.vectors = nn.ParameterList(
            nn.Parameter(
                torch.full((d,), fill) if start is None else start[name(i)].detach().clone().float()
            )
            for i, d in enumerate(dims)
        )

    def forward(self) -> dict[str, torch.Tensor]:
        return {self.name(i): v for i, v in enumerate(self.vectors)}

    @torch.no_grad()
    def eject(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.forward().items()}
