"""The prefix module: config, exact initialisation, eject, layout, masking."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from continual.model import Batch, forward, position_ids
from continual.modules.prefix import (
    PrefixConfig,
    RowPrefix,
    TrainablePrefix,
    check_flat,
    single,
    stack_rows,
)
from continual.objectives import TextLimits, encoder_batch
from tasks.errors import ConfigError

CONFIG = PrefixConfig(length=3, layers=2, kv_heads=2, head_dim=8, hidden_size=32)


def config_for(backbone, length: int, positions: str = "explicit") -> PrefixConfig:
    g = backbone.geometry
    return PrefixConfig(
        length=length,
        layers=g.layers,
        kv_heads=g.kv_heads,
        head_dim=g.head_dim,
        hidden_size=g.hidden_size,
        reparam_hidden=16,
        positions=positions,
    )


@pytest.mark.parametrize(
    "config",
    [CONFIG, CONFIG.with_(positions="shifted", init="words", reparam_hidden=7, length=1)],
)
def test_config_round_trips(config: PrefixConfig) -> None:
    assert PrefixConfig.from_dict(config.to_dict()) == config
    assert PrefixConfig.from_dict({**config.to_dict(), "unknown_key": 1}) == config


def test_config_is_frozen_and_validated() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIG.length = 4  # type: ignore[misc]
    for bad in ({"length": 0}, {"layers": -1}, {"head_dim": 0}, {"reparam_hidden": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            CONFIG.with_(**bad)
    with pytest.raises(ConfigError, match="positions"):
        CONFIG.with_(positions="absolute")
    assert CONFIG.flat_dim == 2 * 2 * 2 * 8
    assert CONFIG.n_params == 3 * CONFIG.flat_dim


def test_prefix_from_tensor_starts_exactly_there() -> None:
    base = torch.randn(CONFIG.length, CONFIG.flat_dim)
    module = TrainablePrefix(CONFIG, base=base, seed=3)
    assert torch.equal(module()["prefix"], base)
    assert torch.equal(module.eject()["prefix"], module.flat())
    assert not module.eject()["prefix"].requires_grad
    # The given tensor is copied, not aliased: changing it later does not move the prefix.
    base.add_(1.0)
    assert not torch.equal(module.flat(), base)


def test_random_prefix_is_seeded_and_eject_equals_forward() -> None:
    a, b = TrainablePrefix(CONFIG, seed=1), TrainablePrefix(CONFIG, seed=1)
    assert torch.equal(a.flat(), b.flat())
    assert not torch.equal(a.flat(), TrainablePrefix(CONFIG, seed=2).flat())
    assert torch.equal(a.eject()["prefix"], a()["prefix"])
    assert a.eject()["prefix"].shape == (CONFIG.length, CONFIG.flat_dim)
    assert CONFIG.shapes() == {"prefix": (CONFIG.length, CONFIG.flat_dim)}
    assert a.n_trainable == sum(p.numel() for p in a.parameters())


def test_wrong_shape_is_refused() -> None:
    for shape in [
        (CONFIG.length + 1, CONFIG.flat_dim),
        (CONFIG.length, CONFIG.flat_dim - 1),
        (CONFIG.length * CONFIG.flat_dim,),
    ]:
        with pytest.raises(ConfigError, match="shape"):
            TrainablePrefix(CONFIG, base=torch.zeros(shape))
        with pytest.raises(ConfigError, match="another backbone"):
            check_flat(torch.zeros(shape), CONFIG)
        with pytest.raises(ConfigError, match="another backbone"):
            CONFIG.check({"prefix": torch.zeros(shape)})
    with pytest.raises(ConfigError, match="named"):
        CONFIG.check(
            {"prefix": torch.zeros(CONFIG.length, CONFIG.flat_dim), "extra": torch.ones(1)}
        )


def test_past_layout_is_length_layers_kv_heads() -> None:
    """Flat `[P, layers*2*kv_heads*head_dim]` reads as `[P, layers, key/value, kv_heads, dim]`."""
    flat = torch.randn(CONFIG.length, CONFIG.flat_dim)
    past = single(flat, CONFIG, batch_size=2).past()
    view = flat.view(CONFIG.length, CONFIG.layers, 2, CONFIG.kv_heads, CONFIG.head_dim)
    assert len(past) == CONFIG.layers
    for layer, (key, value) in enumerate(past):
        assert key.shape == (2, CONFIG.kv_heads, CONFIG.length, CONFIG.head_dim)
        for row in range(2):
            assert torch.equal(key[row], view[:, layer, 0].transpose(0, 1))
            assert torch.equal(value[row], view[:, layer, 1].transpose(0, 1))


def test_stack_rows_pads_masks_and_offsets() -> None:
    short, long_ = CONFIG.with_(length=2), CONFIG.with_(length=4, positions="shifted")
    flats = [torch.randn(2, CONFIG.flat_dim), torch.randn(4, CONFIG.flat_dim)]
    rows = stack_rows(list(zip(flats, [short, long_], strict=True)), torch.tensor([1, 0, 1]))
    assert rows.rows.shape == (3, 4, CONFIG.flat_dim)
    assert rows.mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert rows.offset.tolist() == [4, 0, 4]
    assert torch.equal(rows.rows[1, :2], flats[0]) and not rows.rows[1, 2:].any()
    assert torch.equal(rows.select(torch.tensor([1, 1])).rows[1], rows.rows[1])
    with pytest.raises(ConfigError, match="geometry"):
        stack_rows(
            [(flats[0], short), (torch.randn(2, 64), short.with_(layers=1))], torch.tensor([0, 1])
        )


def test_position_ids_skip_padding() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids(mask, None).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]
    assert position_ids(mask, torch.tensor([3, 0])).tolist() == [[3, 3, 3, 4, 5], [0, 1, 2, 2, 2]]


def _masked(prefix: RowPrefix) -> RowPrefix:
    return dataclasses.replace(prefix, mask=torch.zeros_like(prefix.mask))


def test_fully_masked_prefix_is_no_prefix_on_encoder(tiny_encoder) -> None:
    texts = ["the movie was good", "bad", "a very really quite awful film plot"]
    batch = encoder_batch(tiny_encoder, texts, TextLimits())
    config = config_for(tiny_encoder, 5)
    prefix = _masked(single(10 * torch.randn(5, config.flat_dim), config, len(texts)))
    with torch.no_grad():
        plain = forward(tiny_encoder, batch, None).last_hidden_state
        masked = forward(tiny_encoder, batch, prefix).last_hidden_state
        unmasked = forward(tiny_encoder, batch, single(prefix.rows[0], config, len(texts)))
    real = batch.attention_mask.bool()
    torch.testing.assert_close(masked[real], plain[real], atol=1e-5, rtol=0)
    # ...and the same prefix unmasked does change the output, so the check has teeth.
    assert (unmasked.last_hidden_state[real] - plain[real]).abs().max() > 1e-2


def test_fully_masked_prefix_is_no_prefix_on_decoder(tiny_decoder) -> None:
    tok = tiny_decoder.tokenizer
    ids = [
        tok("the movie was good", add_special_tokens=False)["input_ids"],
        tok("bad", add_special_tokens=False)["input_ids"],
    ]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in ids])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in ids])
    config = config_for(tiny_decoder, 4)
    prefix = _masked(single(torch.randn(4, config.flat_dim), config, 2))
    with torch.no_grad():
        plain = forward(tiny_decoder, Batch(input_ids, mask), None).logits
        masked = forward(tiny_decoder, Batch(input_ids, mask), prefix).logits
    real = mask.bool()
    torch.testing.assert_close(masked[real], plain[real], atol=1e-5, rtol=0)
