"""The training loop on tiny random backbones: it learns, it never touches the backbone, its
schedule, early stopping and resuming behave."""

from __future__ import annotations

import pytest
import torch

from continual.backbones import fingerprint
from continual.inference import evaluate
from continual.modules.prefix import PrefixConfig
from continual.train import (
    TrainConfig,
    flatten_state,
    lr_factor,
    split_validation,
    train,
    unflatten_state,
)
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData, TaskSpec

SENTIMENT = TaskSpec(
    name="sentiment",
    kind="classification",
    labels=("positive", "negative"),
    description="Classify the text as positive or negative",
)


def task_data(rows: list[dict], eval_rows: list[dict], spec: TaskSpec = SENTIMENT) -> TaskData:
    def ex(rs):
        return tuple(Example(r["text"], r["label"]) for r in rs)

    return TaskData(spec=spec, train=ex(rows), eval=ex(eval_rows), fingerprint="test")


def prefix_config(backbone, length: int, positions: str) -> PrefixConfig:
    g = backbone.geometry
    return PrefixConfig(
        length=length,
        layers=g.layers,
        kv_heads=g.kv_heads,
        head_dim=g.head_dim,
        hidden_size=g.hidden_size,
        reparam_hidden=64,
        positions=positions,
    )


@pytest.fixture(scope="module")
def sentiment_data(sentiment) -> TaskData:
    return task_data(sentiment(160, seed=1), sentiment(40, seed=2))


@pytest.fixture(scope="module")
def encoder_run(tiny_encoder, sentiment_data):
    """One training run on the tiny encoder, with the backbone's state before and after."""
    before = fingerprint(tiny_encoder.model)
    # a random head, so the loss curve shows learning from scratch (the probe start begins near
    # the end of it on this separable task: tests/continual/test_probe.py)
    config = TrainConfig(
        steps=100, batch_size=16, lr=1e-2, eval_every=25, patience=0, head_init="random"
    )
    result = train(
        tiny_encoder,
        sentiment_data,
        prefix_config(tiny_encoder, 4, "explicit"),
        config,
        progress=False,
    )
    return before, result, fingerprint(tiny_encoder.model)


def test_encoder_learns_separable_task(tiny_encoder, sentiment_data, encoder_run) -> None:
    _, result, _ = encoder_run
    assert result.steps == 100 and len(result.losses) == 100
    assert result.final_loss < 0.5 * sum(result.losses[:10]) / 10
    assert evaluate(tiny_encoder, result.task, sentiment_data.eval).score >= 0.9
    assert result.task.tensors["prefix"].shape == (4, result.task.config.flat_dim)
    assert not result.task.tensors["prefix"].requires_grad
    head = result.task.head
    assert head is not None and not head.training
    flat = result.task.config.flat_dim
    n_module = 4 * 32 + (32 * 64 + 64) + (64 * flat + flat)  # embedding, MLP in, MLP out
    assert result.trainable_params == n_module + (32 * 2 + 2)  # + the head


def test_backbone_is_untouched_by_training(tiny_encoder, encoder_run) -> None:
    """THE fingerprint test: the frozen backbone's bytes are identical after training."""
    before, _, after = encoder_run
    assert before == after == tiny_encoder.fingerprint
    assert all(not p.requires_grad for p in tiny_encoder.model.parameters())
    assert not tiny_encoder.model.training  # train() leaves the backbone back in eval mode


def test_fingerprint_sees_one_changed_weight(tiny_encoder) -> None:
    """The fingerprint is not blind: it changes with a single element (restored afterwards)."""
    p = next(tiny_encoder.model.parameters())
    with torch.no_grad():
        old = p.view(-1)[0].item()
        p.view(-1)[0] += 1e-3
        try:
            assert fingerprint(tiny_encoder.model) != tiny_encoder.fingerprint
        finally:
            p.view(-1)[0] = old
    assert fingerprint(tiny_encoder.model) == tiny_encoder.fingerprint


def test_decoder_learns_rank_classification(tiny_decoder, sentiment_data) -> None:
    # No task description in the prompt: the tiny random decoder's attention is too diffuse to
    # find the one telling word in a long prompt (with it, accuracy stays near chance).
    data = TaskData(
        spec=SENTIMENT.with_(description=""),
        train=sentiment_data.train,
        eval=sentiment_data.eval,
        fingerprint="test",
    )
    before = fingerprint(tiny_decoder.model)
    config = TrainConfig(steps=150, batch_size=16, lr=1e-2, eval_every=50, patience=0)
    result = train(
        tiny_decoder, data, prefix_config(tiny_decoder, 8, "shifted"), config, progress=False
    )
    assert result.final_loss < 0.25 * sum(result.losses[:10]) / 10
    assert result.task.head is None
    assert evaluate(tiny_decoder, result.task, data.eval).score >= 0.85
    assert fingerprint(tiny_decoder.model) == before == tiny_decoder.fingerprint
    assert all(not p.requires_grad for p in tiny_decoder.model.parameters())


def test_lr_factor_warms_up_then_decays() -> None:
    assert [lr_factor(s, 10, 2) for s in range(11)] == [
        0.5,
        1.0,
        1.0,
        0.875,
        0.75,
        0.625,
        0.5,
        0.375,
        0.25,
        0.125,
        0.0,
    ]
    assert [lr_factor(s, 4, 0) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_factor(12, 10, 2) == 0.0  # never negative past the end


def test_train_config_round_trips_and_validates() -> None:
    config = TrainConfig(steps=7, lr=0.1, patience=0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    for bad in (
        {"steps": 0},
        {"lr": 0.0},
        {"warmup_ratio": 1.0},
        {"val_fraction": 0.0},
        {"patience": -1},
        {"max_length": 4},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            config.with_(**bad)


def test_early_stopping_after_patience(tiny_encoder, sentiment_data) -> None:
    # A learning rate too small to move the validation accuracy: no validation improves on
    # the first, so with patience 2 the run stops at the third validation (counted from the
    # first step, min_best_share 0); the tied scores keep the latest of them.
    config = TrainConfig(
        steps=200, batch_size=8, lr=1e-9, eval_every=2, patience=2, min_best_share=0
    )
    result = train(
        tiny_encoder,
        sentiment_data,
        prefix_config(tiny_encoder, 2, "explicit"),
        config,
        progress=False,
    )
    assert result.stopped_early
    assert result.steps == 6 and len(result.losses) == 6
    assert [s for s, _ in result.validations] == [2, 4, 6]
    assert result.best_step == 6


def test_no_early_stopping_with_patience_zero(tiny_encoder, sentiment_data) -> None:
    config = TrainConfig(steps=6, batch_size=8, lr=1e-9, eval_every=1, patience=0)
    result = train(
        tiny_encoder,
        sentiment_data,
        prefix_config(tiny_encoder, 2, "explicit"),
        config,
        progress=False,
    )
    assert not result.stopped_early and result.steps == 6 and len(result.validations) == 6


def test_generation_tasks_get_a_validation_split() -> None:
    spec = TaskSpec(name="gen", kind="generation", target_field="target")
    rows = [{"text": f"text {i}", "label": f"a distinct target {i}"} for i in range(50)]
    train_rows, val = split_validation(task_data(rows, rows[:2], spec), TrainConfig())
    assert len(val) == 5 and len(train_rows) == 45
    assert not {e.text for e in val} & {e.text for e in train_rows}


def test_classification_validation_split_is_stratified_and_seeded(sentiment_data) -> None:
    rest, val = split_validation(sentiment_data, TrainConfig(val_fraction=0.25))
    assert len(val) == 40 and len(rest) == 120
    assert sorted(e.target for e in val) == ["negative"] * 20 + ["positive"] * 20
    assert split_validation(sentiment_data, TrainConfig(val_fraction=0.25)) == (rest, val)


def test_resume_continues_where_it_stopped(tiny_encoder, sentiment_data) -> None:
    pconfig = prefix_config(tiny_encoder, 4, "explicit")
    config = TrainConfig(
        steps=80,
        batch_size=16,
        lr=2e-2,
        eval_every=1000,
        patience=0,
        warmup_ratio=0.0,
        head_init="random",  # learning from scratch, so the loss has far to fall
    )
    first = train(tiny_encoder, sentiment_data, pconfig, config, progress=False)
    initial, last = sum(first.losses[:3]) / 3, first.final_loss
    assert last < 0.5 * initial
    resumed = train(
        tiny_encoder,
        sentiment_data,
        pconfig,
        config.with_(steps=5),
        resume=first.state,
        progress=False,
    )
    fresh = train(tiny_encoder, sentiment_data, pconfig, config.with_(steps=5), progress=False)
    assert abs(resumed.losses[0] - last) < abs(resumed.losses[0] - initial)
    assert resumed.losses[0] < 0.5 * initial
    assert fresh.losses[0] == pytest.approx(first.losses[0], abs=1e-6)  # same seed, same start


def test_resume_takes_hyperparameters_from_its_own_config(tiny_encoder, sentiment_data) -> None:
    pconfig = prefix_config(tiny_encoder, 2, "explicit")
    config = TrainConfig(steps=10, batch_size=8, lr=1e-2, eval_every=1000, patience=0)
    first = train(tiny_encoder, sentiment_data, pconfig, config, progress=False)
    still = train(
        tiny_encoder,
        sentiment_data,
        pconfig,
        config.with_(steps=1, lr=1e-30),
        resume=first.state,
        progress=False,
    )
    for name, tensor in first.state["module"].items():
        assert torch.equal(still.state["module"][name], tensor), name


def test_train_state_flattens_and_back(tiny_encoder, sentiment_data) -> None:
    config = TrainConfig(steps=3, batch_size=8, lr=1e-2, eval_every=1000, patience=0)
    state = train(
        tiny_encoder,
        sentiment_data,
        prefix_config(tiny_encoder, 2, "explicit"),
        config,
        progress=False,
    ).state
    flat = flatten_state(state)
    assert all(isinstance(v, torch.Tensor) for v in flat.values())
    back = unflatten_state(flat)
    assert flatten_state(back).keys() == flat.keys()
    assert all(torch.equal(flatten_state(back)[k], v) for k, v in flat.items())


def test_encoder_refuses_generation(tiny_encoder) -> None:
    spec = TaskSpec(name="gen", kind="generation", target_field="target")
    data = task_data([{"text": "a", "label": "b"}] * 4, [{"text": "a", "label": "b"}], spec)
    with pytest.raises(ConfigError, match="decoder"):
        train(
            tiny_encoder,
            data,
            prefix_config(tiny_encoder, 2, "explicit"),
            TrainConfig(steps=1),
            progress=False,
        )
