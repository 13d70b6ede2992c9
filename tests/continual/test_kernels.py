"""`continual.kernels.FastDropout`: the same dropout as `nn.Dropout` (rate, scaling, eval mode),
and a loaded backbone whose dropouts were swapped is still entirely in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from continual.kernels import FastDropout, drop_mask, keep_mask, use_fast_dropout
from continual.model import Batch, forward


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_one_minus_p_independently(p: float) -> None:
    torch.manual_seed(0)
    assert drop_mask(torch.Size([100_000]), p).float().mean().item() == pytest.approx(p, abs=0.005)
    m = keep_mask(torch.Size([400_000]), p).float()
    assert m.mean().item() == pytest.approx(1 - p, abs=0.003)
    # neighbours are independent: P(both kept) = (1 - p)^2
    assert (m[:-1] * m[1:]).mean().item() == pytest.approx((1 - p) ** 2, abs=0.004)


def test_fast_dropout_scales_like_nn_dropout_and_is_identity_in_eval() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    d = FastDropout(0.2)
    y = d.train()(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.8))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(d.eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))


def test_fast_dropout_is_seeded() -> None:
    d = FastDropout(0.3).train()
    torch.manual_seed(4)
    a = d(torch.ones(1000))
    torch.manual_seed(4)
    assert torch.equal(a, d(torch.ones(1000)))


def test_swap_keeps_each_module_s_mode() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.2)))
    model.eval()
    assert use_fast_dropout(model) == 2
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert all(type(m) is FastDropout for m in drops)
    assert [m.p for m in drops] == [0.1, 0.2]
    assert not any(m.training for m in model.modules())


def test_loaded_backbone_is_in_eval_mode_and_deterministic(tiny_encoder_dir) -> None:
    """The tiny BERT has dropout 0.1: a module left in training mode would make two passes
    differ. Loaded afresh: the shared fixture may have been put in eval mode by other tests."""
    from continual.backbones import load_backbone

    tiny_encoder = load_backbone(str(tiny_encoder_dir))
    drops = [m for m in tiny_encoder.model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is FastDropout and m.p > 0 for m in drops)
    assert not any(m.training for m in tiny_encoder.model.modules())
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    batch = Batch(ids, torch.ones_like(ids))
    with torch.no_grad():
        a = forward(tiny_encoder, batch, None).last_hidden_state
        b = forward(tiny_encoder, batch, None).last_hidden_state
    assert torch.equal(a, b)
    tiny_encoder.model.train()
    with torch.no_grad():
        c = forward(tiny_encoder, batch, None).last_hidden_state
    assert not torch.equal(a, c)  # ...and dropout does act in training mode


def _attention_inputs(causal: bool):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=gen)
    k = torch.randn(2, 2, 7, 8, generator=gen)  # grouped-query: 2 kv heads for 4 query heads
    v = torch.randn(2, 2, 7, 8, generator=gen)
    mask = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    mask[1, :, :, 5:] = False
    if causal:
        mask &= torch.ones(5, 7, dtype=torch.bool).tril(2)
    return q, k, v, mask


class _Layer(nn.Module):
    num_key_value_groups = 2
    is_causal = False


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_dropout_is_sdpa_when_nothing_is_dropped(causal, monkeypatch) -> None:
    """The training path (our maths) equals SDPA's when the keep mask keeps everything, with a
    bool mask, grouped-query heads and causal masks; and it does drop when allowed to."""
    import continual.kernels as kernels
    from continual.kernels import attention

    q, k, v, mask = _attention_inputs(causal)
    want, _ = attention(_Layer(), q, k, v, mask, dropout=0.0)  # SDPA itself
    monkeypatch.setattr(kernels, "drop_mask", lambda shape, p: torch.zeros(shape, dtype=torch.bool))
    got, _ = attention(_Layer(), q, k, v, mask, dropout=0.5)
    torch.testing.assert_close(got, want * 2.0, atol=1e-5, rtol=1e-5)  # kept values scaled 1/(1-p)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    got2, _ = attention(_Layer(), q, k, v, additive, dropout=0.5)
    torch.testing.assert_close(got2, got, atol=1e-5, rtol=1e-5)
    # no mask: causal exactly when the layer says so, as SDPA decides it
    layer = _Layer()
    for causal_layer in (False, True):
        layer.is_causal = causal_layer
        monkeypatch.setattr(
            kernels, "keep_mask", lambda shape, p: torch.ones(shape, dtype=torch.bool)
        )
        got3, _ = attention(layer, q, k[:, :, :5], v[:, :, :5], None, dropout=0.5)
        want3, _ = attention(layer, q, k[:, :, :5], v[:, :, :5], None, dropout=0.0)
        torch.testing.assert_close(got3, want3 * 2.0, atol=1e-5, rtol=1e-5)
    monkeypatch.undo()
    torch.manual_seed(0)
    dropped, _ = attention(_Layer(), q, k, v, mask, dropout=0.5)
    assert not torch.allclose(dropped, want * 2.0)


def test_loaded_backbone_runs_our_attention_and_inference_is_sdpa(tiny_encoder_dir) -> None:
    from continual.backbones import load_backbone
    from continual.kernels import ATTENTION

    bb = load_backbone(str(tiny_encoder_dir))
    assert bb.model.config._attn_implementation == ATTENTION
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 5, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        ours = bb.model(input_ids=ids, attention_mask=mask).last_hidden_state
        bb.model.set_attn_implementation("sdpa")
        theirs = bb.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(ours, theirs)
