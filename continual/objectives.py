"""What a prefix is trained for and how it predicts, per backbone kind.

- Encoders: classification only. Mean-pooled hidden states -> a per-task head -> label logits.
- Decoders: every task is text to text. A prompt (`description / Input: text / Answer:`) is
  followed by the target and the end token. Classification scores each label word after the
  prompt (rank classification); generation decodes greedily.

Every function takes per-row prefixes, so a batch may mix tasks (see `continual.prefix`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from continual.backbones import Backbone
from continual.heads import ClassificationHead
from continual.model import Batch, forward, mean_pool, position_ids
from continual.prefix import RowPrefix
from tasks.spec import TaskSpec


@dataclass(frozen=True)
class TextLimits:
    """Token budgets: inputs are cut to `max_length` tokens, targets to `max_target_length`."""

    max_length: int = 128
    max_target_length: int = 32


# --- encoders ---------------------------------------------------------------------------------


def encoder_batch(backbone: Backbone, texts: Sequence[str], limits: TextLimits) -> Batch:
    enc = backbone.tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=limits.max_length,
        return_tensors="pt",
    )
    return Batch(enc["input_ids"], enc["attention_mask"])


def encoder_features(
    backbone: Backbone,
    texts: Sequence[str],
    prefix: RowPrefix | None,
    limits: TextLimits,
) -> torch.Tensor:
    """Mean-pooled last hidden states `[B, H]` of the texts under their rows' prefixes."""
    batch = encoder_batch(backbone, texts, limits)
    hidden = forward(backbone, batch, prefix).last_hidden_state
    return mean_pool(hidden, batch.attention_mask)


def encoder_loss(
    backbone: Backbone,
    head: ClassificationHead,
    spec: TaskSpec,
    texts: Sequence[str],
    targets: Sequence[str],
    prefix: RowPrefix,
    limits: TextLimits,
) -> torch.Tensor:
    index = {label: i for i, label in enumerate(spec.labels)}
    y = torch.tensor([index[t] for t in targets])
    logits = head(encoder_features(backbone, texts, prefix, limits))
    return F.cross_entropy(logits, y)


# --- decoders ---------------------------------------------------------------------------------


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


def _tail_logprob(
    backbone: Backbone,
    prompts: Sequence[list[int]],
    tails: Sequence[list[int]],
    prefix: RowPrefix | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of each tail after its prompt: (`[N, K]`, mask `[N, K]`).

    Rows are left-padded so every tail ends at the last position; the LM head runs only on the
    last K+1 positions (K = longest tail), which is all that is scored.
    """
    k = max(len(t) for t in tails)
    ids, mask = _left_pad([p + t for p, t in zip(prompts, tails)], backbone.tokenizer.pad_token_id)
    out = forward(backbone, Batch(ids, mask), prefix, logits_to_keep=k + 1)
    logp = out.logits[:, :-1].float().log_softmax(-1)  # predicts the last k tokens
    target = ids[:, -k:]
    tmask = torch.zeros_like(target)
    for i, t in enumerate(tails):
        tmask[i, k - len(t) :] = 1
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * tmask, tmask


def decoder_loss(
    backbone: Backbone,
    spec: TaskSpec,
    texts: Sequence[str],
    targets: Sequence[str],
    prefix: RowPrefix,
    limits: TextLimits,
) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens (end token included)."""
    prompts = [prompt_ids(backbone, spec, t, limits) for t in texts]
    tails = [target_ids(backbone, y, limits) for y in targets]
    logp, tmask = _tail_logprob(backbone, prompts, tails, prefix)
    return -logp.sum() / tmask.sum()


def rank_classify(
    backbone: Backbone,
    specs: Sequence[TaskSpec],
    texts: Sequence[str],
    prefix: RowPrefix | None,
    limits: TextLimits,
) -> list[str]:
    """For row i (task `specs[i]`), the label whose words are most likely after the prompt.

    Each (row, label) pair is one sequence in a single pass; a label's score is the summed
    log-probability of its tokens and the end token.
    """
    prompts, tails, owner = [], [], []
    for i, (spec, text) in enumerate(zip(specs, texts)):
        p = prompt_ids(backbone, spec, text, limits)
        for label in spec.labels:
            prompts.append(p)
            tails.append(target_ids(backbone, label, limits))
            owner.append(i)
    expanded = prefix.select(torch.tensor(owner)) if prefix is not None else None
    logp, _ = _tail_logprob(backbone, prompts, tails, expanded)
    scores = logp.sum(-1)
    out, j = [], 0
    for spec in specs:
        n = len(spec.labels)
        out.append(spec.labels[int(scores[j : j + n].argmax())])
        j += n
    return out


def generate(
    backbone: Backbone,
    specs: Sequence[TaskSpec],
    texts: Sequence[str],
    prefix: RowPrefix | None,
    limits: TextLimits,
) -> list[str]:
    """Greedy decoding of up to `max_target_length` tokens per row, stopping at the end token."""
    tok = backbone.tokenizer
    prompts = [prompt_ids(backbone, s, t, limits) for s, t in zip(specs, texts)]
    ids, mask = _left_pad(prompts, tok.pad_token_id)
    out = forward(backbone, Batch(ids, mask), prefix, logits_to_keep=1, use_cache=True)
    cache = out.past_key_values
    if prefix is None:
        full_mask, pos = mask, position_ids(mask, None)[:, -1:]
    else:
        full_mask = torch.cat([prefix.mask.to(mask.dtype), mask], dim=1)
        pos = position_ids(mask, prefix.offset)[:, -1:]
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
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
        out = backbone.model(
            input_ids=nxt.unsqueeze(1),
            attention_mask=full_mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    seqs = torch.stack(produced, dim=1).tolist()
    texts_out = []
    for s in seqs:
        if tok.eos_token_id in s:
            s = s[: s.index(tok.eos_token_id)]
        s = s[: limits.max_target_length]  # the last step only has room for the end token
        texts_out.append(tok.decode(s, skip_special_tokens=True).strip())
    return texts_out
