"""One padded forward pass of a frozen backbone with per-row task modules.

Every row of a batch carries its own task's module (`continual.modules.RowModules`), so rows of
different tasks share one pass: a module's virtual positions (a prefix's keys and values) are
injected as the cache, the attention mask is extended over them (padded virtual positions are
masked), position ids are set explicitly so each row's convention holds, and a module that
changes activations token by token does so while the pass runs (`RowModules.hooks`).

Encoders are right-padded and decoders left-padded (so targets and generated tokens line up at
the end of every row).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from continual.backbones import Backbone
from continual.cache import on, place, returned_cache, with_cache
from continual.modules.base import RowModules

__all__ = [
    "Batch",
    "forward",
    "has_inputs",
    "hooks",
    "kept_positions",
    "mean_pool",
    "position_ids",
    "returned_cache",
    "with_cache",
]


@dataclass
class Batch:
    """Token ids `[B, T]` and their mask `[B, T]` (1 = real token)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def position_ids(token_mask: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """`[B, T]` positions of the real tokens, starting at each row's offset, padding skipped.

    Counting only real tokens makes left padding (decoders) and right padding (encoders) give
    every row the positions it would have alone.
    """
    pos = (token_mask.cumsum(-1) - 1).clamp(min=0)
    return pos if offset is None else pos + offset.unsqueeze(-1)


def kept_positions(width: int, keep: int) -> int | torch.Tensor:
    """`logits_to_keep` for the last `keep` of `width` positions (0: all), as explicit indices.

    transformers slices `hidden[:, -keep:]`, a non-contiguous view that the language-model head
    then multiplies by a batch-expanded weight (a `bmm`); indices gather a contiguous copy and
    the head runs as one `mm`: measured 85 ms against about 15 ms for 8 rows of 4 positions on
    smollm2's 49,152-word head.
    """
    if keep <= 0 or keep >= width:
        return 0
    return torch.arange(width - keep, width)


def hooks(
    rows: RowModules | None, model: torch.nn.Module, token_row: torch.Tensor
) -> contextlib.AbstractContextManager[None]:
    """`rows.hooks(model, token_row)`, or nothing when there are no modules. `token_row`
    `[B', T']`: the row of `rows` each input token of the call belongs to (-1: none)."""
    return contextlib.nullcontext() if rows is None else rows.hooks(model, token_row)


def every_token(rows: int, width: int) -> torch.Tensor:
    """`[rows, width]` token -> row map of a plain batch: row i's tokens belong to row i."""
    return torch.arange(rows).unsqueeze(1).expand(rows, width)


def forward(backbone: Backbone, batch: Batch, modules: RowModules | None, **model_kwargs: Any):
    """Run the backbone with per-row modules (or none); `model_kwargs` go to the model as they
    are (decoders: `use_cache`, `logits_to_keep`). Returns the transformers output: encoders
    give `last_hidden_state` `[B, T, H]`, decoders `logits` (and a cache, `returned_cache`).

    Virtual positions that are inputs (`modules.embeds()`, a soft prompt) go before the token
    embeddings and their outputs are dropped again, so the output covers the T tokens as with
    any other module; a decoder's returned cache holds them first, as it would a prefix.
    """
    dev = backbone.device
    ids, mask = batch.input_ids.to(dev), batch.attention_mask.to(dev)
    kwargs = {}
    if modules is not None:
        past = modules.past()
        if past is not None:
            past = place(past, dev, backbone.dtype)
            kwargs = with_cache(backbone.model, DynamicCache(ddp_cache_data=past))
        full_mask = torch.cat([modules.mask.to(device=dev, dtype=mask.dtype), mask], dim=1)
        pos = position_ids(mask, modules.offset.to(dev))
        embeds = input_embeds(modules)
        if embeds is not None:
            return _forward_inputs(backbone, ids, embeds, modules, full_mask, pos, model_kwargs)
    else:
        full_mask, pos = mask, position_ids(mask, None)
    with hooks(modules, backbone.model, every_token(*ids.shape).to(dev)):
        return backbone.model(
            input_ids=ids,
            attention_mask=full_mask,
            position_ids=pos,
            **kwargs,
            **on(dev, model_kwargs),
        )


def input_embeds(modules: RowModules | None) -> torch.Tensor | None:
    """The rows' virtual positions that are inputs (`RowModules.embeds`, optional), or None."""
    embeds = getattr(modules, "embeds", None)
    return None if embeds is None else embeds()


def has_inputs(modules: RowModules | None) -> bool:
    """Whether the rows' modules put virtual positions in the input (a packed pass cannot)."""
    return input_embeds(modules) is not None


def _forward_inputs(
    backbone: Backbone,
    ids: torch.Tensor,
    embeds: torch.Tensor,
    modules: RowModules,
    full_mask: torch.Tensor,
    pos: torch.Tensor,
    model_kwargs: dict[str, Any],
):
    """`forward` for modules whose V virtual positions are input embeddings `[B, V, H]`: the
    model sees V + T inputs (the virtual ones at positions 0..V_row-1, padding masked) and the
    output's per-position fields are cut back to the T tokens."""
    dev = ids.device
    v = int(embeds.shape[1])
    table = backbone.model.get_input_embeddings()
    inputs = torch.cat([embeds.to(device=dev, dtype=table.weight.dtype), table(ids)], dim=1)
    virtual_pos = position_ids(modules.mask.to(dev), None)
    keep = model_kwargs.get("logits_to_keep", 0)
    if isinstance(keep, torch.Tensor):  # explicit indices count the T tokens
        model_kwargs = {**model_kwargs, "logits_to_keep": keep + v}
    with hooks(modules, backbone.model, every_token(ids.shape[0], v + ids.shape[1]).to(dev)):
        out = backbone.model(
            inputs_embeds=inputs,
            attention_mask=full_mask,
            position_ids=torch.cat([virtual_pos, pos], dim=1),
            **on(dev, model_kwargs),
        )
    if getattr(out, "last_hidden_state", None) is not None:
        out["last_hidden_state"] = out.last_hidden_state[:, v:]
    if getattr(out, "logits", None) is not None and isinstance(keep, int) and keep == 0:
        out["logits"] = out.logits[:, v:]
    return out


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`[B, T, H]`, `[B, T]` -> `[B, H]`: the mean over real tokens."""
    m = mask.unsqueeze(-1).to(device=hidden.device, dtype=hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
