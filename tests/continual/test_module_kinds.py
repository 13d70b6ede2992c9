"""Every module kind beside the prefix (lora, prompt, ptuning, ia3, bitfit) through the generic paths:
it trains on the frozen backbone, is ejected and rebuilt exactly, is stored and loaded, refuses
tensors of another shape in one line, and rows of several tasks of the kind share a pass as each
answers alone, padded or packed; (IA)³ computes what PEFT's does."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from continual import checkpoint, packing
from continual.backbones import fingerprint
from continual.inference import evaluate, predict
from continual.modules import build, config_from_dict, module_kind
from continual.train import TrainConfig, train
from tasks.errors import ConfigError
from tasks.spec import TaskSpec
from tests.continual.test_module_seam import LIMITS, SPEC, TEXTS, data

KINDS = ("lora", "prompt", "ptuning", "ia3", "bitfit")
OPTIONS = {
    "lora": {"rank": 4},
    "prompt": {"length": 3},
    "ptuning": {"length": 3},
    "ia3": {},
    "bitfit": {},
}


@pytest.fixture(scope="module")
def trained(tiny_encoder, sentiment):
    """Each kind trained 30 steps on the tiny encoder."""
    task = data(sentiment(96, seed=1), sentiment(24, seed=2))
    run = TrainConfig(steps=30, batch_size=16, lr=1e-2, eval_every=10, patience=0)
    before = fingerprint(tiny_encoder.model)
    out = {}
    for kind in KINDS:
        config = module_kind(kind).config_for(tiny_encoder, **OPTIONS[kind])
        out[kind] = train(tiny_encoder, task, config, run, progress=False)
    return out, task, before


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_trains_leaves_the_backbone_and_rebuilds_exactly(
    kind, tiny_encoder, trained
) -> None:
    results, task, before = trained
    result = results[kind]
    config = result.task.config
    assert config.kind == kind and set(result.task.tensors) == set(config.shapes())
    assert config_from_dict(kind, config.to_dict()) == config
    assert config.n_params == sum(int(torch.tensor(s).prod()) for s in config.shapes().values())
    start = build(config, seed=0).eject()
    assert any(not torch.equal(result.task.tensors[k], start[k]) for k in start)  # it trained
    assert evaluate(tiny_encoder, result.task, task.eval).score >= 0.75
    assert fingerprint(tiny_encoder.model) == before == tiny_encoder.fingerprint
    assert not any(m._forward_hooks for m in tiny_encoder.model.modules())  # hooks came off
    again = build(config, start=result.task.tensors).eject()
    assert all(torch.equal(again[k], v) for k, v in result.task.tensors.items())


@pytest.mark.parametrize("kind", ("ia3", "bitfit"))
def test_kinds_that_start_as_the_identity_leave_outputs_unchanged_before_training(
    kind, tiny_encoder
) -> None:
    from continual.objectives import encoder_features

    plugin = module_kind(kind)
    config = plugin.config_for(tiny_encoder)
    rows = plugin.single(build(config).eject(), config, len(TEXTS))
    with torch.no_grad():
        under = encoder_features(tiny_encoder, TEXTS, rows, LIMITS)
        plain = encoder_features(tiny_encoder, TEXTS, None, LIMITS)
    torch.testing.assert_close(under, plain, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_stored_loaded_and_refuses_another_shape(
    kind, tmp_path, tiny_encoder, trained
) -> None:
    results, task, _ = trained
    result = results[kind]
    folder = checkpoint.save(tmp_path / kind, result.task, {"backbone": tiny_encoder.info()})
    loaded, doc = checkpoint.load(folder, backbone_fingerprint=tiny_encoder.fingerprint)
    assert doc["module_kind"] == kind and loaded.config == result.task.config
    assert evaluate(tiny_encoder, loaded, task.eval) == evaluate(
        tiny_encoder, result.task, task.eval
    )
    first = sorted(result.task.tensors)[0]
    wrong = {**result.task.tensors, first: torch.zeros(3, 5)}
    with pytest.raises(ConfigError, match="has shape") as e:
        build(result.task.config, start=wrong)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ("lora", "prompt", "ptuning", "ia3"))
def test_rows_of_several_tasks_of_a_kind_share_a_pass_on_a_decoder(
    kind, tiny_decoder, sentiment, monkeypatch
) -> None:
    """A classification and a generation task of the kind, rows interleaved: each answers as
    it does alone, padded or packed."""
    run = TrainConfig(steps=12, batch_size=8, lr=2e-2, eval_every=6, patience=0, max_length=32)
    cls = data(sentiment(48, seed=3), sentiment(8, seed=4), SPEC.with_(description=""))
    gen_spec = TaskSpec(name="echo", kind="generation", target_field="target")
    gen_rows = [{"text": r["text"], "label": "the cat sat"} for r in sentiment(32, seed=5)]
    gen = data(gen_rows, gen_rows[:6], gen_spec)
    tasks = []
    for task in (cls, gen):
        config = module_kind(kind).config_for(tiny_decoder, **OPTIONS[kind])
        # deep prompts without the reparameterization learn slowly at the prefix's rate
        lr = 1e-1 if kind in ("ptuning", "prompt") else run.lr
        result = train(
            tiny_decoder, task, config, run.with_(max_target_length=4, lr=lr), progress=False
        )
        assert min(result.losses[-3:]) < result.losses[0]
        tasks.append(replace(result.task, limits=LIMITS))
    items = [(i % 2, t) for i, t in enumerate(TEXTS * 2)]
    with torch.no_grad():
        mixed = predict(tiny_decoder, tasks, items, batch_size=len(items))
        alone = [predict(tiny_decoder, [tasks[k]], [(0, t)])[0] for k, t in items]
        assert mixed == alone
        with monkeypatch.context() as m:
            m.setattr(packing, "packable", lambda backbone: False)
            assert predict(tiny_decoder, tasks, items, batch_size=4) == mixed


def test_bitfit_on_a_backbone_without_biases_is_one_line(tiny_decoder) -> None:
    with pytest.raises(ConfigError, match="no bias terms") as e:
        module_kind("bitfit").config_for(tiny_decoder)
    assert "\n" not in str(e.value)


def test_ptuning_starts_where_the_prefix_of_its_seed_starts(tiny_encoder) -> None:
    p = module_kind("prefix").config_for(tiny_encoder, length=3)
    q = module_kind("ptuning").config_for(tiny_encoder, length=3)
    assert torch.equal(build(p, seed=5).eject()["prefix"], build(q, seed=5).eject()["prefix"])
    assert sum(x.numel() for x in build(q).parameters()) == q.n_params  # no MLP


@torch.no_grad()
def test_our_ia3_computes_what_peft_s_ia3_computes(tiny_encoder, trained) -> None:
    from peft import IA3Config as PeftIA3Config
    from peft import get_peft_model

    results, _, _ = trained
    task = results["ia3"].task
    peft_model = get_peft_model(
        copy.deepcopy(tiny_encoder.model),
        PeftIA3Config(
            target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"]
        ),
    )
    for i, name in enumerate(task.config.targets):
        layer = peft_model.base_model.model.get_submodule(name)
        layer.ia3_l["default"].copy_(task.tensors[f"ia3.{i}"].view_as(layer.ia3_l["default"]))
    peft_model.eval()
    tok = tiny_encoder.tokenizer(TEXTS, return_tensors="pt", padding=True)
    theirs = peft_model(**tok).last_hidden_state
    rows = module_kind("ia3").single(task.tensors, task.config, len(TEXTS))
    token_row = torch.arange(len(TEXTS)).unsqueeze(1).expand_as(tok["input_ids"])
    with rows.hooks(tiny_encoder.model, token_row):
        ours = tiny_encoder.model(**tok).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (ours - tiny_encoder.model(**tok).last_hidden_state).abs().max() > 1e-4
