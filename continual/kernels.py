"""CPU fast paths that keep the maths of what they replace.

`FastDropout` is `nn.Dropout` with a cheaper mask on CPU. torch draws one Mersenne-Twister number
per element for `bernoulli_`, which made dropout about 15% of a minilm training step on 2 cores
(the frozen backbone still runs dropout while a prefix trains, as PEFT's does). Here each 64-bit
draw yields four 16-bit uniforms: an element is kept when its uniform is at least
`round(p * 65536)`, so the drop rate is `p` to within 1/131072, elements are independent, and kept
values are scaled by `1 / (1 - p)` as `nn.Dropout` does. Other devices, and eval mode, use
`nn.Dropout` itself. `python -m bench.train_step --ablate` measures it against torch's.
"""

from __future__ import annotations

import torch
from torch import nn


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability `1 - p` (CPU)."""
    n = 1
    for d in shape:
        n *= int(d)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    u16 = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    return u16 >= (round(p * 65536) - 32768)


class FastDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same scaling) with `keep_mask` on CPU in training mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1.0:
            return torch.zeros_like(x)
        return x * keep_mask(x.shape, self.p) * (1.0 / (1.0 - self.p))


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain `nn.Dropout` in `model` by a `FastDropout` of the same `p`; returns
    how many were replaced. Dropout holds no weights, so the model's fingerprint is unchanged."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Dropout
    ]
    for parent, name, child in swaps:  # a new module starts in training mode: keep the old one's
        setattr(parent, name, FastDropout(child.p).train(child.training))
    return len(swaps)
