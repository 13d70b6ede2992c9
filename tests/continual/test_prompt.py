"""Prompt tuning's soft input tokens: what the model computes under them is checked against
an independent computation (an encoder run by hand on the concatenated embeddings, as PEFT
runs a prompt; on a causal decoder, the prefix whose keys and values the frozen backbone gives
for the prompt), prompts of different lengths share a pass as each runs alone, the text start
is the backbone's own embeddings, and bad lengths are one line."""

from __future__ import annotations

import pytest
import torch

from continual import packing
from continual.model import Batch, forward, mean_pool
from continual.modules import module_kind
from continual.objectives import encoder_features
from continual.objectives.decoder import generate, label_scores
from tasks.errors import ConfigError
from tests.continual.test_module_seam import LIMITS, SPEC, TEXTS

PROMPT = module_kind("prompt")


def _prompt(backbone, length: int, seed: int) -> dict[str, torch.Tensor]:
    config = PROMPT.config_for(backbone, length=length)
    gen = torch.Generator().manual_seed(seed)
    return {"prompt": torch.randn(length, config.hidden_size, generator=gen) * 0.5}


@torch.no_grad()
def test_an_encoder_under_a_prompt_computes_the_concatenated_embeddings(tiny_encoder) -> None:
    tensors = _prompt(tiny_encoder, 4, seed=1)
    config = PROMPT.config_for(tiny_encoder, length=4)
    tok = tiny_encoder.tokenizer(TEXTS, return_tensors="pt", padding=True)
    batch = Batch(tok["input_ids"], tok["attention_mask"])
    ours = forward(tiny_encoder, batch, PROMPT.single(tensors, config, len(TEXTS)))
    words = tiny_encoder.model.get_input_embeddings()(tok["input_ids"])
    prompts = tensors["prompt"].unsqueeze(0).expand(len(TEXTS), -1, -1)
    theirs = tiny_encoder.model(
        inputs_embeds=torch.cat([prompts, words], 1),
        attention_mask=torch.cat(
            [torch.ones(len(TEXTS), 4, dtype=torch.long), batch.attention_mask], 1
        ),
    ).last_hidden_state[:, 4:]
    assert ours.last_hidden_state.shape == theirs.shape
    real = batch.attention_mask.bool()  # a pad's own output is never read
    torch.testing.assert_close(ours.last_hidden_state[real], theirs[real], atol=1e-5, rtol=0)
    plain = forward(tiny_encoder, batch, None).last_hidden_state
    assert (
        mean_pool(theirs, batch.attention_mask) - mean_pool(plain, batch.attention_mask)
    ).abs().max() > 1e-3


@torch.no_grad()
def test_on_a_causal_decoder_a_prompt_is_the_prefix_the_backbone_gives_for_it(tiny_decoder) -> None:
    """Prompt tokens only attend to earlier prompt tokens, so their keys and values in every
    layer do not depend on the input: a prefix made of them must give the same logits."""
    p = 3
    tensors = _prompt(tiny_decoder, p, seed=2)
    cache = tiny_decoder.model(
        inputs_embeds=tensors["prompt"][None], use_cache=True
    ).past_key_values
    prefix = module_kind("prefix").config_for(tiny_decoder, length=p, positions="shifted")
    kv = torch.stack(
        [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]
    )  # [layers, 2, kv_heads, P, head_dim]
    flat = kv.permute(3, 0, 1, 2, 4).reshape(p, prefix.flat_dim)
    tok = tiny_decoder.tokenizer
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):  # left-padded, as the decoder objectives lay rows out
        ids[i, width - len(s) :], mask[i, width - len(s) :] = torch.tensor(s), 1
    config = PROMPT.config_for(tiny_decoder, length=p)
    ours = forward(tiny_decoder, Batch(ids, mask), PROMPT.single(tensors, config, len(seqs)))
    rows = module_kind("prefix").single({"prefix": flat}, prefix, len(seqs))
    theirs = forward(tiny_decoder, Batch(ids, mask), rows)
    real = mask.bool()
    torch.testing.assert_close(ours.logits[real], theirs.logits[real], atol=1e-5, rtol=0)
    keep = torch.arange(width - 2, width)  # explicit indices count the input's tokens
    cut = forward(tiny_decoder, Batch(ids, mask), PROMPT.single(tensors, config, len(seqs)),
                  logits_to_keep=keep)  # fmt: skip
    torch.testing.assert_close(cut.logits, ours.logits[:, -2:], atol=1e-6, rtol=0)


@torch.no_grad()
def test_prompts_of_different_lengths_share_a_pass_as_each_runs_alone(
    tiny_encoder, tiny_decoder
) -> None:
    for backbone in (tiny_encoder, tiny_decoder):
        parts = [
            (_prompt(backbone, n, seed=n), PROMPT.config_for(backbone, length=n)) for n in (2, 5)
        ]
        row_task = torch.tensor([0, 1, 1, 0, 1])[: len(TEXTS)]
        mixed = PROMPT.rows(parts, row_task)
        assert mixed.mask.tolist()[0] == [1, 1, 0, 0, 0]
        assert mixed.offset.tolist()[:4] == [2, 5, 5, 2]
        alone = [PROMPT.single(*parts[int(k)], 1) for k in row_task]
        if backbone.kind == "encoder":
            got = encoder_features(backbone, TEXTS, mixed, LIMITS)
            want = torch.cat(
                [encoder_features(backbone, [t], r, LIMITS) for t, r in zip(TEXTS, alone)]
            )
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            continue
        spec = SPEC.with_(description="")
        got = label_scores(backbone, [spec] * len(TEXTS), TEXTS, mixed, LIMITS)
        for t, r, g in zip(TEXTS, alone, got):
            torch.testing.assert_close(
                g, label_scores(backbone, [spec], [t], r, LIMITS)[0], atol=1e-4, rtol=0
            )
        said = generate(backbone, [spec] * len(TEXTS), TEXTS, mixed, LIMITS)
        assert said == [generate(backbone, [spec], [t], r, LIMITS)[0] for t, r in zip(TEXTS, alone)]


def test_a_prompt_never_takes_the_packed_path(tiny_encoder, monkeypatch) -> None:
    """The objectives run prompt rows padded even where packing is on: asking a prompt for a
    packed pass is an error, so a packed call would fail here."""
    assert packing.packable(tiny_encoder)
    config = PROMPT.config_for(tiny_encoder, length=2)
    rows = PROMPT.single(_prompt(tiny_encoder, 2, seed=3), config, len(TEXTS))
    with pytest.raises(ConfigError, match="packed pass"):
        rows.packed(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        assert encoder_features(tiny_encoder, TEXTS, rows, LIMITS).shape[0] == len(TEXTS)


def test_the_text_start_is_the_backbone_s_embeddings_repeated(tiny_encoder) -> None:
    config = PROMPT.config_for(tiny_encoder, length=5)
    start = PROMPT.start_from_text(tiny_encoder, config, "good bad")
    ids = tiny_encoder.tokenizer("good bad", add_special_tokens=False)["input_ids"]
    table = tiny_encoder.model.get_input_embeddings().weight.detach()
    want = table[torch.tensor((ids * 5)[:5])]
    assert start["prompt"].shape == (5, config.hidden_size)
    torch.testing.assert_close(start["prompt"], want, atol=0, rtol=0)
    assert PROMPT.build(config, start=start).eject()["prompt"].equal(start["prompt"])
    random = PROMPT.build(config, seed=0).eject()["prompt"]
    assert abs(float(random.std()) - config.init_std) < 0.5 * config.init_std


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"length": 0}, "prompt length must be a whole number"),
        ({"length": "20"}, "prompt length must be a whole number"),
        ({"rank": 4}, "unknown prompt option"),
    ],
)
def test_bad_prompt_options_are_one_line(options, says, tiny_encoder) -> None:
    with pytest.raises(ConfigError, match=says) as e:
        PROMPT.check_options(options, "entry 3")
    assert str(e.value).startswith("entry 3") and "\n" not in str(e.value)


def test_a_prompt_as_long_as_the_context_is_refused(tiny_encoder) -> None:
    context = tiny_encoder.model.config.max_position_embeddings
    with pytest.raises(ConfigError, match="leaves no room for the input"):
        PROMPT.config_for(tiny_encoder, length=context)
