"""Task heads for encoder backbones: mean-pooled features -> label logits, stored with the prefix."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Dropout and a linear layer over mean-pooled hidden states: `[B, H]` -> `[B, n_labels]`."""

    def __init__(self, hidden_size: int, n_labels: int, *, dropout: float = 0.1, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed + 1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, n_labels)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 0.02, generator=gen)
            self.linear.bias.zero_()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(pooled))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "head.weight": self.linear.weight.detach().clone(),
            "head.bias": self.linear.bias.detach().clone(),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ClassificationHead:
        w = tensors["head.weight"]
        head = cls(w.shape[1], w.shape[0], dropout=0.0)
        with torch.no_grad():
            head.linear.weight.copy_(w)
            head.linear.bias.copy_(tensors["head.bias"])
        return head.eval()
