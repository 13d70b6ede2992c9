"""The "lora" module kind: trains on the frozen backbone through the generic paths, mixes with
other LoRA tasks (of other ranks) and with prefixes in one batch as each answers alone, padded
or packed, is stored and loaded exactly, and computes what PEFT's LoRA computes."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from continual import checkpoint, packing
from continual.backbones import fingerprint
from continual.inference import TrainedTask, evaluate, predict
from continual.modules import config_from_dict, module_kind
from continual.modules.lora import LORA, LoraConfig
from continual.modules.prefix import prefix_config_for
from continual.objectives import encoder_features
from continual.train import TrainConfig, train
from tasks.errors import ConfigError
from tasks.spec import TaskSpec
from tests.continual.test_module_seam import LIMITS, SPEC, TEXTS, data


def test_the_config_names_its_tensors_and_round_trips(tiny_encoder, tiny_decoder) -> None:
    enc = LORA.config_for(tiny_encoder)
    assert module_kind("lora") is LORA and enc.kind == "lora"
    g = tiny_encoder.geometry
    assert len(enc.targets) == 2 * g.layers  # query and value of every layer
    assert all(t.endswith((".query", ".value")) for t in enc.targets)
    assert enc.shapes()["lora.0.A"] == (8, g.hidden_size) and enc.scale == 2.0
    assert enc.n_params == sum(int(torch.tensor(s).prod()) for s in enc.shapes().values())
    assert config_from_dict("lora", enc.to_dict()) == enc
    dec = LORA.config_for(tiny_decoder, rank=2, alpha=4, targets=["q_proj", "k_proj", "v_proj"])
    assert len(dec.targets) == 3 * tiny_decoder.geometry.layers and dec.scale == 2.0


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"rank": 0}, "rank must be"),
        ({"alpha": -1}, "alpha must be positive"),
        ({"targets": []}, "targets is empty"),
        ({"rnak": 4}, "unknown lora option"),
    ],
)
def test_bad_options_are_one_line(options, says) -> None:
    with pytest.raises(ConfigError, match=says) as e:
        LORA.check_options(options, "arrival t")
    assert "\n" not in str(e.value) and str(e.value).startswith("arrival t:")


def test_targets_that_are_not_linear_layers_of_the_backbone_are_refused(tiny_encoder) -> None:
    with pytest.raises(ConfigError, match="matches no layer"):
        LORA.config_for(tiny_encoder, targets=["q_proj"])
    with pytest.raises(ConfigError, match="not a linear layer"):
        LORA.config_for(tiny_encoder, targets=["attention"])


@pytest.fixture(scope="module")
def encoder_lora(tiny_encoder, sentiment):
    before = fingerprint(tiny_encoder.model)
    task = data(sentiment(96, seed=1), sentiment(24, seed=2))
    config = LORA.config_for(tiny_encoder, rank=4)
    run = TrainConfig(steps=30, batch_size=16, lr=1e-2, eval_every=10, patience=0)
    return train(tiny_encoder, task, config, run, progress=False), task, before


def test_lora_trains_on_a_frozen_encoder_and_leaves_it_as_it_was(
    tiny_encoder, encoder_lora
) -> None:
    result, task, before = encoder_lora
    config = result.task.config
    assert result.task.config.kind == "lora" and set(result.task.tensors) == set(config.shapes())
    start = LORA.build(config, seed=0).eject()
    assert all(not torch.any(start[k]) for k in start if k.endswith(".B"))  # B starts at zero
    assert any(not torch.equal(result.task.tensors[k], start[k]) for k in start)  # it trained
    assert evaluate(tiny_encoder, result.task, task.eval).score >= 0.8
    assert fingerprint(tiny_encoder.model) == before == tiny_encoder.fingerprint
    for name in config.targets:  # the hooks came off
        assert not tiny_encoder.model.get_submodule(name)._forward_hooks
    # ejected, rebuilt from the ejected tensors: exactly the same module
    again = LORA.build(config, start=result.task.tensors).eject()
    assert all(torch.equal(again[k], v) for k, v in result.task.tensors.items())


def test_lora_is_stored_loaded_and_refused_on_another_shape(
    tmp_path, tiny_encoder, encoder_lora
) -> None:
    result, task, _ = encoder_lora
    folder = checkpoint.save(tmp_path / "lora", result.task, {"backbone": tiny_encoder.info()})
    loaded, doc = checkpoint.load(folder, backbone_fingerprint=tiny_encoder.fingerprint)
    assert doc["module_kind"] == "lora" and loaded.config == result.task.config
    assert evaluate(tiny_encoder, loaded, task.eval) == evaluate(
        tiny_encoder, result.task, task.eval
    )
    wrong = {**result.task.tensors, "lora.0.A": torch.zeros(3, 5)}
    with pytest.raises(ConfigError, match=r"lora tensor 'lora.0.A' has shape \(3, 5\)") as e:
        LORA.build(result.task.config, start=wrong)
    assert "\n" not in str(e.value)


@torch.no_grad()
def test_lora_tasks_mix_on_an_encoder_as_each_runs_alone(tiny_encoder, encoder_lora) -> None:
    result, _, _ = encoder_lora
    other = LORA.build(result.task.config.with_(rank=2, alpha=8), seed=3)
    with torch.no_grad():
        for b in other.b:
            b.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    parts = [(result.task.tensors, result.task.config), (other.eject(), other.config)]
    items = [(i % 2, t) for i, t in enumerate(TEXTS * 2)]
    rows = LORA.rows(parts, torch.tensor([k for k, _ in items]))
    feats = encoder_features(tiny_encoder, [t for _, t in items], rows, LIMITS)
    for r, (k, t) in enumerate(items):
        one = LORA.single(parts[k][0], parts[k][1], 1)
        torch.testing.assert_close(
            feats[r], encoder_features(tiny_encoder, [t], one, LIMITS)[0], atol=1e-5, rtol=0
        )
    flipped = LORA.rows(parts, torch.tensor([1 - k for k, _ in items]))
    assert (
        encoder_features(tiny_encoder, [t for _, t in items], flipped, LIMITS) - feats
    ).abs().max() > 1e-4


def test_lora_rows_mix_with_prefixes_on_a_decoder_padded_or_packed(
    tiny_decoder, sentiment, monkeypatch
) -> None:
    """A trained LoRA classification task, a generation task of another rank and a prefix
    task, rows interleaved: each answers as it does alone, padded or packed."""
    run = TrainConfig(steps=12, batch_size=8, lr=2e-2, eval_every=6, patience=0, max_length=32)
    cls = data(sentiment(48, seed=3), sentiment(8, seed=4), SPEC.with_(description=""))
    gen_spec = TaskSpec(name="echo", kind="generation", target_field="target")
    gen_rows = [{"text": r["text"], "label": "the cat sat"} for r in sentiment(32, seed=5)]
    gen = data(gen_rows, gen_rows[:6], gen_spec)
    tasks = []
    for task, rank in ((cls, 4), (gen, 2)):
        config = LORA.config_for(tiny_decoder, rank=rank)
        result = train(tiny_decoder, task, config, run.with_(max_target_length=4), progress=False)
        assert result.losses[-1] < result.losses[0]
        tasks.append(replace(result.task, limits=LIMITS))
    pcfg = prefix_config_for(tiny_decoder, 3, None)
    flat = torch.randn(3, pcfg.flat_dim, generator=torch.Generator().manual_seed(1))
    spec = TaskSpec(name="animal", kind="classification", labels=("cat", "dog"))
    tasks.append(TrainedTask(spec, pcfg, {"prefix": flat}, limits=LIMITS))
    items = [(i % 3, t) for i, t in enumerate(TEXTS * 2)]
    mixed = predict(tiny_decoder, tasks, items, batch_size=len(items))
    alone = [predict(tiny_decoder, [tasks[k]], [(0, t)])[0] for k, t in items]
    assert mixed == alone
    with monkeypatch.context() as m:
        m.setattr(packing, "packable", lambda backbone: False)
        assert predict(tiny_decoder, tasks, items, batch_size=4) == mixed


@torch.no_grad()
def test_our_lora_computes_what_peft_s_lora_computes(tiny_encoder, encoder_lora) -> None:
    """The same A and B in PEFT's LoraModel on a copy of the backbone: equal hidden states."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    result, _, _ = encoder_lora
    config: LoraConfig = result.task.config
    model = copy.deepcopy(tiny_encoder.model)
    peft_model = get_peft_model(
        model,
        PeftLoraConfig(
            r=config.rank, lora_alpha=config.alpha, target_modules=["query", "value"],
            lora_dropout=0.0,
        ),
    )  # fmt: skip
    for i, name in enumerate(config.targets):
        layer = peft_model.base_model.model.get_submodule(name)
        layer.lora_A["default"].weight.copy_(result.task.tensors[f"lora.{i}.A"])
        layer.lora_B["default"].weight.copy_(result.task.tensors[f"lora.{i}.B"])
    peft_model.eval()
    tok = tiny_encoder.tokenizer(TEXTS, return_tensors="pt", padding=True)
    theirs = peft_model(**tok).last_hidden_state
    ours_rows = LORA.single(result.task.tensors, config, len(TEXTS))
    with ours_rows.hooks(tiny_encoder.model, torch.arange(len(TEXTS)).unsqueeze(1).expand_as(
        tok["input_ids"])):  # fmt: skip
        ours = tiny_encoder.model(**tok).last_hidden_state
    plain = tiny_encoder.model(**tok).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (ours - plain).abs().max() > 1e-4
