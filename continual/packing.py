"""Packed passes: the sequences of a batch laid end to end in a few rows, with no padding.

A padded batch of 16 questions is as wide as its longest one; on a CPU every padded position
costs as much as a real one (a trec batch at 64 tokens is about 45% padding, an sms_spam prompt
batch about 40%). A packed pass puts several sequences (segments) in one row and keeps them
apart with a 4D attention mask, so only real tokens are computed:

- each segment attends to the tokens of its own segment (causally on decoders) and to its own
  task's prefix, never to another segment;
- positions restart in every segment (at its prefix length under the "shifted" convention), so a
  segment's outputs equal what it gives alone in a batch of one (within float rounding; the
  tests check 1e-5);
- a row's key/value cache holds what the modules of its segments' tasks put there (a prefix:
  each task's prefix once, see `continual.modules.prefix.packed`), and the layout keeps a
  task's segments in the same rows where they fit (`groups`), so a mixed-task pass attends to
  few more virtual positions than a single-task one;
- a module that changes activations token by token is told each packed token's segment
  (`RowModules.hooks`).

Rows are filled longest segment first, each into the emptiest row it fits (rows hold at most
`capacity` tokens, or the longest segment if that is longer), so rows come out about equally
long. The layout depends only on the sequence lengths: the same batch always packs the same way.

Only attention implementations that take a ready 4D mask are packed (`sdpa`, `eager`, and
`continual.kernels.attention`); others (flash attention, flex) use the padded path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from continual.backbones import Backbone
from continual.cache import on, place, with_cache
from continual.kernels import ATTENTION
from continual.model import hooks
from continual.modules.base import RowModules

#: Row length a packed pass aims at. Longer rows mean fewer, fuller rows but a larger share of
#: attention spent on masked-out pairs; 128 keeps that share under ~10% on minilm and smollm2.
CAPACITY = 128


@dataclass(frozen=True)
class Packing:
    """Where each segment sits. `input_ids`, `position_ids`, `segment` are `[R, L]` (`segment`
    is the segment's index, -1 on the row ends left empty); `row`, `start`, `length` are `[S]`."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment: torch.Tensor
    row: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor

    @property
    def n_rows(self) -> int:
        return int(self.input_ids.shape[0])


def packable(backbone: Backbone) -> bool:
    """Whether the backbone's attention takes a custom 4D mask (sdpa, eager and ours do)."""
    impl = getattr(backbone.model.config, "_attn_implementation", None) or "eager"
    return impl in ("sdpa", "eager", ATTENTION)


def layout(
    lengths: Sequence[int], capacity: int = CAPACITY, groups: Sequence[int] | None = None
) -> list[list[int]]:
    """Segments per row: longest first, each into the emptiest row with room for it, and, when
    `groups` (each segment's task) are given, into a row already holding its task if one has
    room, so rows hold few tasks and their caches few prefixes."""
    if not lengths:
        return []
    cap = max(capacity, max(lengths))
    n_rows = max(1, -(-sum(lengths) // cap))
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    fill = [0] * n_rows
    held: list[set[int]] = [set() for _ in range(n_rows)]
    if groups is not None and len(set(groups)) < 2:
        groups = None  # one task: balance the rows, nothing to keep together
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [r for r in range(len(rows)) if fill[r] + lengths[i] <= cap]
        if not fits:
            rows.append([])
            fill.append(0)
            held.append(set())
            fits = [len(rows) - 1]
        if groups is not None:
            fits = [r for r in fits if groups[i] in held[r]] or fits
        r = min(fits, key=lambda r: (fill[r], r))
        rows[r].append(i)
        fill[r] += lengths[i]
        if groups is not None:
            held[r].add(groups[i])
    return [r for r in rows if r]


def pack(
    seqs: Sequence[Sequence[int]],
    first_position: Sequence[int],
    pad_id: int,
    capacity: int = CAPACITY,
    groups: Sequence[int] | None = None,
) -> Packing:
    """Pack token sequences; segment i's positions run from `first_position[i]`; `groups`
    (segment i's task) keep a task's segments together where they fit (`layout`)."""
    lengths = [len(s) for s in seqs]
    rows = layout(lengths, capacity, groups)
    width = max(sum(lengths[i] for i in r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)
    row_of, start_of = [0] * len(seqs), [0] * len(seqs)
    for r, members in enumerate(rows):
        col = 0
        for i in members:
            n = lengths[i]
            ids[r, col : col + n] = torch.tensor(seqs[i], dtype=torch.long)
            pos[r, col : col + n] = torch.arange(first_position[i], first_position[i] + n)
            seg[r, col : col + n] = i
            row_of[i], start_of[i] = r, col
            col += n
    return Packing(
        input_ids=ids,
        position_ids=pos,
        segment=seg,
        row=torch.tensor(row_of, dtype=torch.long),
        start=torch.tensor(start_of, dtype=torch.long),
        length=torch.tensor(lengths, dtype=torch.long),
    )


def attention_mask(
    packing: Packing,
    columns: torch.Tensor | None,
    *,
    causal: bool,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """`[R, 1, L, K + L]` (K: the virtual positions each row's cache holds, whose visibility
    `columns` `[R, L, K]` gives, see `RowModules.packed`): True where a query may attend.

    An empty row-end position attends to itself only, so no softmax row is empty (an empty one
    gives NaN, and NaN times a zero gradient is still NaN). With `dtype`, the mask is additive
    (0 allowed, the dtype's minimum elsewhere), as eager attention wants it.
    """
    seg = packing.segment
    r, width = seg.shape
    same = seg.unsqueeze(2) == seg.unsqueeze(1)  # [R, L, L]
    real = seg >= 0
    tokens = same & real.unsqueeze(2)
    if causal:
        tokens &= torch.ones(width, width, dtype=torch.bool).tril()
    tokens |= torch.eye(width, dtype=torch.bool).unsqueeze(0) & ~real.unsqueeze(2)
    full = tokens if columns is None else torch.cat([columns, tokens], dim=2)
    full = full.unsqueeze(1)
    if dtype is None:
        return full
    return torch.zeros(full.shape, dtype=dtype).masked_fill(~full, torch.finfo(dtype).min)


def run(
    backbone: Backbone,
    packing: Packing,
    modules: RowModules | None,
    *,
    causal: bool,
    **model_kwargs: Any,
):
    """One backbone pass over a packing, the rows' modules applied; `model_kwargs` go to the
    model (decoders: `use_cache`, `logits_to_keep`). Encoders return `last_hidden_state`
    `[R, L, H]`; decoders return `logits` at the columns kept (the same for every row)."""
    impl = getattr(backbone.model.config, "_attn_implementation", None) or "eager"
    dtype = next(backbone.model.parameters()).dtype if impl == "eager" else None
    part = None if modules is None else modules.packed(packing.segment, packing.row)
    mask = attention_mask(
        packing, None if part is None else part.columns, causal=causal, dtype=dtype
    )
    dev = backbone.device
    kwargs = {}
    if part is not None and part.past is not None:
        past = place(part.past, dev, backbone.dtype)
        kwargs = with_cache(backbone.model, DynamicCache(ddp_cache_data=past))
    with hooks(modules, backbone.model, packing.segment.to(dev)):
        return backbone.model(
            input_ids=packing.input_ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=packing.position_ids.to(dev),
            **kwargs,
            **on(dev, model_kwargs),
        )


def segment_mean(hidden: torch.Tensor, packing: Packing) -> torch.Tensor:
    """`[R, L, H]` -> `[S, H]`: each segment's mean hidden state."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    seg = packing.segment.reshape(-1).to(hidden.device)
    real = seg >= 0
    sums = torch.zeros(
        len(packing.length), hidden.shape[-1], dtype=hidden.dtype, device=hidden.device
    )
    sums = sums.index_add(0, seg[real], flat[real])
    return sums / packing.length.unsqueeze(1).to(device=hidden.device, dtype=hidden.dtype)
