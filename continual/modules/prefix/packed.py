"""A prefix's part of a packed pass (`continual.packing`): which prefixes each packed row's
cache holds, what every packed token may attend to among them, and the cache itself.

A row's cache holds the prefixes of the tasks among its segments, each once: the packing keeps a
task's segments in the same rows where they fit, so a mixed-task pass attends to few more prefix
positions than a single-task one. When the whole batch is one task, every row holds the same
prefix as an expand (no copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from continual.modules.base import Past


@dataclass(frozen=True)
class RowBanks:
    """Which prefix positions each packed row's cache holds: `index` `[R, K]` into the
    flattened bank (`n * P_max` positions), `valid` `[R, K]` (False on padding), and for each
    held position its task `task` and its place `j` in that task's prefix. A row holds only the
    prefixes of the tasks among its segments."""

    index: torch.Tensor
    valid: torch.Tensor
    task: torch.Tensor
    j: torch.Tensor
    shared: bool  # one task for the whole batch: every row holds the same, uncopied prefix


def row_banks(n_rows: int, row: torch.Tensor, bank: torch.Tensor, task: torch.Tensor) -> RowBanks:
    """The `RowBanks` of `n_rows` packed rows; `row` `[B]` is each batch row's packed row,
    `bank` `[n, P_max, flat_dim]` the distinct prefixes and `task` `[B]` each row's index."""
    n, p_max = int(bank.shape[0]), int(bank.shape[1])
    if n == 1:
        j = torch.arange(p_max).expand(n_rows, p_max)
        return RowBanks(j, torch.ones_like(j, dtype=torch.bool), torch.zeros_like(j), j, True)
    per_row: list[list[int]] = [[] for _ in range(n_rows)]
    for s, r in enumerate(row.tolist()):
        t = int(task[s])
        if t not in per_row[r]:
            per_row[r].append(t)
    k_max = p_max * max(len(ts) for ts in per_row)
    index = torch.zeros(n_rows, k_max, dtype=torch.long)
    valid = torch.zeros(n_rows, k_max, dtype=torch.bool)
    owner = torch.zeros(n_rows, k_max, dtype=torch.long)
    for r, ts in enumerate(per_row):
        for m, t in enumerate(sorted(ts)):
            cols = slice(m * p_max, (m + 1) * p_max)
            index[r, cols] = torch.arange(t * p_max, (t + 1) * p_max)
            valid[r, cols] = True
            owner[r, cols] = t
    j = torch.arange(k_max).remainder(p_max).expand(n_rows, k_max)
    return RowBanks(index, valid, owner, j, False)


def columns(
    segment: torch.Tensor, mask: torch.Tensor, task: torch.Tensor, banks: RowBanks
) -> torch.Tensor:
    """`[R, L, K]`: a packed token sees the held positions of its own segment's task where that
    prefix's `mask` `[B, P_max]` is 1; empty row ends see none."""
    real = segment >= 0
    s = segment.clamp(min=0)
    pre = banks.task.unsqueeze(1) == task[s].unsqueeze(2)  # [R, L, K]
    pre &= mask.bool()[s.unsqueeze(2), banks.j.unsqueeze(1)]
    pre &= banks.valid.unsqueeze(1) & real.unsqueeze(2)
    return pre


def bank_past(
    bank: torch.Tensor, banks: RowBanks, *, layers: int, kv_heads: int, head_dim: int
) -> Past:
    """Each packed row's prefixes as a cache, per layer `[R, kv_heads, K, head_dim]`: gathered
    per row when the batch mixes tasks, an expand of the one prefix (no copy) when it does not."""
    n, p_max, _ = bank.shape
    flat = bank.reshape(n * p_max, layers, 2, kv_heads, head_dim)
    n_rows = banks.index.shape[0]
    if banks.shared:
        view = flat.permute(1, 2, 3, 0, 4)  # [layers, 2, kv_heads, P, head_dim]
        pairs = [x.unbind(0) for x in view.unbind(0)]
        return [
            (k.unsqueeze(0).expand(n_rows, -1, -1, -1), v.unsqueeze(0).expand(n_rows, -1, -1, -1))
            for k, v in pairs
        ]
    view = flat[banks.index].permute(2, 3, 0, 4, 1, 5)  # [layers, 2, R, kv_heads, K, hd]
    return [tuple(x.unbind(0)) for x in view.unbind(0)]
