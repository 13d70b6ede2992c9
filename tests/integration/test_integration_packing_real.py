"""Packed and padded passes agree on the real backbones (minilm, smollm2) at 64 and 128 tokens:
outputs, the gradient into the prefix, and the loss curve of a short training run.

The packed-path issue (#12) reported a prefix that learned far worse packed than padded on a task
outside the catalog. Measured with dropout off, the two paths give the same loss at every step
of a 400-step run (both stalled the same way): the cause was the recipe (a random head, see
`continual.probe`), and what differed between the paths was only the random stream of dropout.
These tests pin that equality on real weights and real, long inputs (IMDB reviews fill a
128-token row; TREC questions share rows), where the tiny-model tests in
tests/continual/test_packing.py cannot reach.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from continual import packing
from continual.backbones import Backbone, load_backbone
from continual.modules.prefix import PrefixConfig, TrainablePrefix, prefix_config_for, single
from continual.objectives import TextLimits, decoder_loss, encoder_features
from continual.train import TrainConfig, train
from tasks import catalog
from tasks.spec import Example, TaskData

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return load_backbone("minilm")


@pytest.fixture(scope="module")
def smollm2() -> Backbone:
    return load_backbone("smollm2")


@pytest.fixture(scope="module")
def mixed() -> TaskData:
    """IMDB reviews (longer than 128 tokens) and TREC questions (a dozen tokens), one task."""
    imdb = catalog.load("imdb", max_train=200)
    trec = catalog.load("trec", max_train=200)
    reviews = [e for e in imdb.train if len(e.text) > 800][:24]
    labels = imdb.spec.labels  # the questions take review labels: one task, two lengths
    questions = [Example(e.text, labels[i % 2]) for i, e in enumerate(trec.train[:24])]
    rows = tuple(x for pair in zip(reviews, questions) for x in pair)
    return TaskData(spec=imdb.spec, train=rows, eval=rows[:8], fingerprint="mixed")


def _config(bb: Backbone, length: int = 16) -> PrefixConfig:
    return prefix_config_for(bb, length, None)  # explicit on minilm, shifted on smollm2


@contextlib.contextmanager
def padded(monkeypatch: pytest.MonkeyPatch, on: bool) -> Iterator[None]:
    with monkeypatch.context() as m:
        if on:
            m.setattr(packing, "packable", lambda backbone: False)
        yield


@contextlib.contextmanager
def no_dropout(bb: Backbone) -> Iterator[None]:
    drops = [m for m in bb.model.modules() if isinstance(m, torch.nn.Dropout)]
    old = [m.p for m in drops]
    for m in drops:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in zip(drops, old):
            m.p = p


def _prefix(bb: Backbone) -> torch.Tensor:
    return TrainablePrefix(_config(bb), seed=0).flat().detach() * 3.0  # larger than a fresh start


@pytest.mark.parametrize("max_length", [64, 128])
def test_minilm_outputs_and_prefix_gradient(minilm, mixed, monkeypatch, max_length) -> None:
    texts = [e.text for e in mixed.train[:16]]
    cfg, limits = _config(minilm), TextLimits(max_length=max_length)
    out = {}
    for pad in (False, True):
        x = _prefix(minilm).requires_grad_(True)
        with padded(monkeypatch, pad):
            feats = encoder_features(minilm, texts, single(x, cfg, len(texts)), limits)
        (feats.sum(-1) ** 2).sum().backward()
        out[pad] = (feats.detach(), x.grad)
    torch.testing.assert_close(out[False][0], out[True][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[False][1], out[True][1], atol=1e-5, rtol=1e-4)
    assert packing.packable(minilm)


@pytest.mark.parametrize("max_length", [64, 128])
def test_smollm2_loss_and_prefix_gradient(smollm2, mixed, monkeypatch, max_length) -> None:
    chunk = mixed.train[:6]
    spec = mixed.spec
    cfg, limits = _config(smollm2), TextLimits(max_length=max_length)
    out = {}
    for pad in (False, True):
        x = _prefix(smollm2).requires_grad_(True)
        with padded(monkeypatch, pad):
            loss = decoder_loss(
                smollm2,
                spec,
                [e.text for e in chunk],
                [e.target for e in chunk],
                single(x, cfg, len(chunk)),
                limits,
            )
        loss.backward()
        out[pad] = (loss.detach(), x.grad)
    torch.testing.assert_close(out[False][0], out[True][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[False][1], out[True][1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("name", "max_length", "steps"), [
    ("minilm", 64, 12), ("minilm", 128, 12), ("smollm2", 64, 4), ("smollm2", 128, 4),
])  # fmt: skip
def test_training_curves_agree(request, mixed, monkeypatch, name, max_length, steps) -> None:
    """Training mode with dropout off (the only randomness that differs between the paths):
    the loss at every step and the trained prefix agree."""
    bb = request.getfixturevalue(name)
    data = TaskData(spec=mixed.spec, train=mixed.train, eval=(), fingerprint="mixed")
    config = TrainConfig(
        steps=steps,
        batch_size=8 if name == "minilm" else 4,
        lr=1e-3,
        patience=0,
        eval_every=10**6,
        max_length=max_length,
        val_fraction=0.05,
    )
    runs = {}
    with no_dropout(bb):
        for pad in (False, True):
            with padded(monkeypatch, pad):
                runs[pad] = train(bb, data, _config(bb), config, progress=False)
    packed, plain = runs[False], runs[True]
    assert len(packed.losses) == steps
    # AdamW's first steps are about lr * sign(gradient), so float rounding (1e-6 between the
    # paths' sums) on near-zero gradient elements grows into step-size differences: measured
    # 1e-5 relative on minilm's curve and 8e-4 on smollm2's (its loss is about 12). The failure
    # reported was 33% (0.60 against 0.45).
    torch.testing.assert_close(
        torch.tensor(packed.losses), torch.tensor(plain.losses), atol=1e-4, rtol=2e-3
    )
    # The same amplification moves the trained prefix apart by a machine-dependent amount: under
    # 1e-2 on one CI machine, 1.33e-2 on smollm2-64 on another (other matmul kernels, another
    # rounding); a divergence like the one reported moves it by tens of percent.
    a, b = packed.task.tensors["prefix"], plain.task.tensors["prefix"]
    drift = (a - b).norm() / b.norm()
    assert float(drift) < 3e-2
    assert packed.losses[0] != packed.losses[-1]  # it trained
