"""The trainable prefix: the paper's reparameterization, with an exact start.

Training uses a `[P, hidden]` embedding through an MLP (hidden -> 512 -> tanh ->
layers*2*kv_dim). A prefix initialised from given tensors starts exactly at them: the trainable
module is `base + MLP(embedding)` with `base` the given tensor (a frozen buffer) and the MLP's
last layer starting at zero, so the MLP learns the change from `base`. `eject()` collapses all
of it into the flat tensor used at inference.
"""

from __future__ import annotations

import torch
from torch import nn

from continual.modules.prefix.config import NAME, PrefixConfig, check_flat


class TrainablePrefix(nn.Module):
    """`base + MLP(embedding)`, shape `[P, flat_dim]`, as the named tensors `{"prefix": ...}`.

    With no `base` this is the paper's reparameterization with a random start. With `base`, the
    MLP's output layer starts at zero so `forward()` returns `base` exactly before training.
    """

    def __init__(self, config: PrefixConfig, *, base: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        self.embedding = nn.Parameter(torch.randn(config.length, config.hidden_size, generator=gen))
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.reparam_hidden),
            nn.Tanh(),
            nn.Linear(config.reparam_hidden, config.flat_dim),
        )
        with torch.no_grad():
            for layer in (self.mlp[0], self.mlp[2]):
                bound = 1.0 / layer.in_features**0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
        if base is None:
            base = torch.zeros(config.length, config.flat_dim)
        else:
            base = check_flat(base, config).detach().clone().float()
            with torch.no_grad():
                self.mlp[2].weight.zero_()
                self.mlp[2].bias.zero_()
        self.register_buffer("base", base)

    def flat(self) -> torch.Tensor:
        """The flat prefix `[P, flat_dim]`, differentiable."""
        return self.base + self.mlp(self.embedding)

    def forward(self) -> dict[str, torch.Tensor]:
        return {NAME: self.flat()}

    @torch.no_grad()
    def eject(self) -> dict[str, torch.Tensor]:
        """`{"prefix": [P, flat_dim]}`, detached: all that inference needs."""
        return {NAME: self.flat().detach().clone().contiguous()}

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
