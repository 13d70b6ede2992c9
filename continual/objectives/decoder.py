"""Decoder plumbing shared by decoder objectives: every task is text to text.

A prompt (`description / Input: text / Answer:`) is followed by the target and the end token.
Training scores the target tokens (`decoder_loss`); classification scores each label word after
the prompt (`label_scores`, rank classification); generation decodes greedily (`generate`).
Rows are left-padded so targets line up at the end of every row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from continual import packing
from continual.backbones import Backbone
from continual.cache import returned_cache, with_cache
from continual.model import (
    Batch,
    every_token,
    forward,
    has_inputs,
    hooks,
    kept_positions,
    position_ids,
)
from continual.modules.base import RowModules
from continual.objectives.base import TextLimits
from tasks.spec import TaskSpec


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(backbone: Backbone, spec: TaskSpec, text: str, limits: TextLimits) -> list[int]:
    """Token ids of the prompt for one input; the input text is cut to `max_length` tokens."""
    tok = backbone.tokenizer
    head = f"{spec.description.strip()}\n" if spec.description.strip() else ""
    return (
        _ids(tok, f"{head}Input: ") + _ids(tok, text)[: limits.max_length] + _ids(tok, "\nAnswer:")
    )


def target_ids(backbone: Backbone, target: str, limits: TextLimits) -> list[int]:
    """The target's ids (after a space) cut to `max_target_length`, then the end token."""
    tok = backbone.tokenizer
    return _ids(tok, " " + target)[: limits.max_target_length] + [tok.eos_token_id]


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
    return ids, mask


def tail_logprob(
    backbone: Backbone,
    prompts: Sequence[list[int]],
    tails: Sequence[list[int]],
    modules: RowModules | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of each tail after its prompt: (`[N, K]`, mask `[N, K]`).

    Rows are left-padded so every tail ends at the last position; the LM head runs only on the
    last K+1 positions (K = longest tail), which is all that is scored.
    """
    k = max(len(t) for t in tails)
    if packing.packable(backbone) and not has_inputs(modules):
        return _tail_logprob_packed(backbone, prompts, tails, modules, k)
    ids, mask = _left_pad([p + t for p, t in zip(prompts, tails)], backbone.tokenizer.pad_token_id)
    keep = kept_positions(ids.shape[1], k + 1)
    out = forward(backbone, Batch(ids, mask), modules, use_cache=False, logits_to_keep=keep)
    logp = out.logits[:, :-1].float().log_softmax(-1)  # predicts the last k tokens
    target = ids[:, -k:].to(logp.device)
    tmask = torch.zeros_like(target)
    for i, t in enumerate(tails):
        tmask[i, k - len(t) :] = 1
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * tmask, tmask


def _tail_logprob_packed(
    backbone: Backbone,
    prompts: Sequence[list[int]],
    tails: Sequence[list[int]],
    modules: RowModules | None,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`tail_logprob` in one packed pass; the LM head runs at the columns that predict a tail
    token in some row (the union over rows, as explicit indices), nowhere else."""
    seqs = [p + t for p, t in zip(prompts, tails)]
    first = [0] * len(seqs) if modules is None else modules.offset.tolist()
    groups = None if modules is None else modules.groups().tolist()
    packed = packing.pack(seqs, first, backbone.tokenizer.pad_token_id, groups=groups)
    # tail token j of segment i sits at column start+len(prompt)+j; the column before predicts it
    seg_of, row_of, col_of, tok_of, slot_of = [], [], [], [], []
    for i, (p, t) in enumerate(zip(prompts, tails)):
        base = int(packed.start[i]) + len(p) - 1
        for j, token in enumerate(t):
            seg_of.append(i)
            row_of.append(int(packed.row[i]))
            col_of.append(base + j)
            tok_of.append(token)
            slot_of.append(k - len(t) + j)  # right-aligned, as the padded path lays it out
    cols = torch.tensor(sorted(set(col_of)), dtype=torch.long)
    where = {int(c): n for n, c in enumerate(cols)}
    run = packing.run(backbone, packed, modules, causal=True, use_cache=False, logits_to_keep=cols)
    logits = run.logits
    dev = logits.device

    def index(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, device=dev)

    picked = logits[index(row_of), index([where[c] for c in col_of])]
    logp = picked.float().log_softmax(-1).gather(-1, index(tok_of).unsqueeze(-1))
    out = torch.zeros(len(seqs), k, dtype=logp.dtype, device=dev)
    out = out.index_put((index(seg_of), index(slot_of)), logp.squeeze(-1))
    tmask = torch.zeros(len(seqs), k, dtype=torch.long, device=dev)
    tmask[index(seg_of), index(slot_of)] = 1
    return out, tmask


def decoder_loss(
    backbone: Backbone,
    spec: TaskSpec,
    texts: Sequence[str],
    targets: Sequence[str],
    modules: RowModules | None,
    limits: TextLimits,
) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens (end token included)."""
    prompts = [prompt_ids(backbone, spec, t, limits) for t in texts]
    tails = [target_ids(backbone, y, limits) for y in targets]
    logp, tmask = tail_logprob(backbone, prompts, tails, modules)
    return -logp.sum() / tmask.sum()


def label_scores(
    backbone: Backbone,
    specs: Sequence[TaskSpec],
    texts: Sequence[str],
    modules: RowModules | None,
    limits: TextLimits,
) -> list[torch.Tensor]:
    """For row i, the summed log-probability of each of `specs[i].labels` (its tokens and the
    end token) after the row's prompt: one tensor of `len(labels)` scores per row.

    The prompt is encoded once per row; its keys and values (the module's virtual positions
    included) are then shared by all of that row's label candidates, which run together in a
    second, short pass (under the row's module hooks, if it has any).
    """
    tok = backbone.tokenizer
    prompts = [prompt_ids(backbone, s, t, limits) for s, t in zip(specs, texts)]
    ids, mask = _left_pad(prompts, tok.pad_token_id)
    keep = kept_positions(ids.shape[1], 1)
    out = forward(backbone, Batch(ids, mask), modules, use_cache=True, logits_to_keep=keep)
    first = out.logits[:, -1].float().log_softmax(-1)  # [B, V]: the first tail token
    dev = first.device
    mask = mask.to(dev)
    past_mask = (
        mask
        if modules is None
        else torch.cat([modules.mask.to(device=dev, dtype=mask.dtype), mask], dim=1)
    )
    last_pos = position_ids(mask, None if modules is None else modules.offset.to(dev))[:, -1]

    owner, tails = [], []
    for i, spec in enumerate(specs):
        for label in spec.labels:
            owner.append(i)
            tails.append(target_ids(backbone, label, limits))
    index = torch.tensor(owner, device=dev)
    width = max(len(t) for t in tails)
    tail_ids = torch.full((len(tails), width), tok.pad_token_id, dtype=torch.long)
    tail_mask = torch.zeros((len(tails), width), dtype=torch.long)
    for j, t in enumerate(tails):  # right-padded: pads come after every scored token
        tail_ids[j, : len(t)] = torch.tensor(t)
        tail_mask[j, : len(t)] = 1
    tail_ids, tail_mask = tail_ids.to(dev), tail_mask.to(dev)
    scores = first[index].gather(-1, tail_ids[:, :1]).squeeze(-1)
    if width > 1:
        cache = returned_cache(out)
        past = [(layer.keys[index], layer.values[index]) for layer in cache.layers]
        candidate_row = index.unsqueeze(1).expand(len(tails), width - 1)
        with hooks(modules, backbone.model, candidate_row):
            step = backbone.model(
                input_ids=tail_ids[:, :-1],
                attention_mask=torch.cat([past_mask[index], tail_mask[:, :-1]], dim=1),
                position_ids=last_pos[index].unsqueeze(1) + 1 + torch.arange(width - 1, device=dev),
                use_cache=False,
                **with_cache(backbone.model, DynamicCache(ddp_cache_data=past)),
            )
        logp = step.logits.float().log_softmax(-1)  # predicts tail tokens 1..width-1
        rest = logp.gather(-1, tail_ids[:, 1:].unsqueeze(-1)).squeeze(-1) * tail_mask[:, 1:]
        scores = scores + rest.sum(-1)
    per_row, j = [], 0
    for spec in specs:
        per_row.append(scores[j : j + len(spec.labels)])
        j += len(spec.labels)
    return per_row


def rank_classify(
    backbone: Backbone,
    specs: Sequence[TaskSpec],
    texts: Sequence[str],
    modules: RowModules | None,
    limits: TextLimits,
) -> list[str]:
    """For row i (task `specs[i]`), the label whose words are most likely after the prompt."""
    scores = label_scores(backbone, specs, texts, modules, limits)
    return [spec.labels[int(s.argmax())] for spec, s in zip(specs, scores)]


def generate(
    backbone: Backbone,
    specs: Sequence[TaskSpec],
    texts: Sequence[str],
    modules: RowModules | None,
    limits: TextLimits,
) -> list[str]:
    """Greedy decoding of up to `max_target_length` tokens per row, stopping at the end token."""
    tok = backbone.tokenizer
    prompts = [prompt_ids(backbone, s, t, limits) for s, t in zip(specs, texts)]
    ids, mask = _left_pad(prompts, tok.pad_token_id)
    keep = kept_positions(ids.shape[1], 1)
    out = forward(backbone, Batch(ids, mask), modules, use_cache=True, logits_to_keep=keep)
    cache = returned_cache(out)
    dev = out.logits.device
    mask = mask.to(dev)
    if modules is None:
        full_mask, pos = mask, position_ids(mask, None)[:, -1:]
    else:
        full_mask = torch.cat([modules.mask.to(device=dev, dtype=mask.dtype), mask], dim=1)
        pos = position_ids(mask, modules.offset.to(dev))[:, -1:]
    one_each = every_token(ids.shape[0], 1).to(dev)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=dev)
    produced: list[torch.Tensor] = []
    for _ in range(limits.max_target_length + 1):
        nxt = out.logits[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, tok.eos_token_id), nxt)
        produced.append(nxt)
        done |= nxt == tok.eos_token_id
        if bool(done.all()):
            break
        full_mask = torch.cat([full_mask, torch.ones_like(nxt).unsqueeze(1)], dim=1)
        pos = pos + 1
        with hooks(modules, backbone.model, one_each):
            out = backbone.model(
                input_ids=nxt.unsqueeze(1),
                attention_mask=full_mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **with_cache(backbone.model, cache),
            )
    seqs = torch.stack(produced, dim=1).tolist()
    texts_out = []
    for s in seqs:
        if tok.eos_token_id in s:
            s = s[: s.index(tok.eos_token_id)]
        s = s[: limits.max_target_length]  # the last step only has room for the end token
        texts_out.append(tok.decode(s, skip_special_tokens=True).strip())
    return texts_out
