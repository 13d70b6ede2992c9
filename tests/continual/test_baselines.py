"""The baselines on the tiny encoder: they learn, forget-prone weights live in a trainable copy,
their saved state round-trips exactly, and a save killed half-way leaves the previous state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from continual import baselines as bl
from continual.backbones import fingerprint
from continual.baselines import base as bl_base
from continual.modules.prefix import PrefixConfig
from continual.train import TrainConfig
from tasks.errors import ConfigError
from tasks.sources import load_files

CONFIG = TrainConfig(steps=8, batch_size=8, lr=1e-2, eval_every=4)


@pytest.fixture
def tasks(write_jsonl, sentiment):
    out = []
    for name, labels, seed in (("one", ("positive", "negative"), 1), ("two", ("yes", "no"), 2)):
        train = write_jsonl(f"{name}-train.jsonl", sentiment(32, seed=seed, labels=labels))
        evals = write_jsonl(f"{name}-eval.jsonl", sentiment(16, seed=seed + 9, labels=labels))
        out.append(load_files(name=name, train=train, eval=evals))
    return out


def pconfig(backbone) -> PrefixConfig:
    g = backbone.geometry
    return PrefixConfig(
        length=4, layers=g.layers, kv_heads=g.kv_heads, head_dim=g.head_dim, hidden_size=32
    )


def scores(learner: bl.Learner, tasks) -> list[str]:
    return [
        learner.evaluate(d.spec, d.eval, batch_size=8, limits=CONFIG.limits).predictions_sha256
        for d in tasks
    ]


@pytest.mark.parametrize("method", ["sequential-ft", "shared-prefix"])
def test_a_saved_learner_loads_back_exactly(method, tiny_encoder, tasks, tmp_path) -> None:
    before = fingerprint(tiny_encoder.model)
    learner = bl.create_learner(method, tiny_encoder, pconfig(tiny_encoder), {"lr": 1e-3})
    init, random = learner.starting_points(tasks[0], CONFIG)
    assert init == random  # nothing learnt yet: the start is the pretrained (or fresh) one
    for data in tasks:
        summary = learner.learn(data, CONFIG, progress=False)
        assert summary["lr"] == 1e-3 and summary["steps"] <= CONFIG.steps
    learner.log.append({"note": "kept beside the weights"})
    bl.save_learner(tmp_path, learner)
    again = bl.load_learner(tmp_path, method, tiny_encoder)
    assert again is not None and again.tasks == ["one", "two"] and again.log == learner.log
    assert again.options == {"lr": 1e-3}
    assert scores(again, tasks) == scores(learner, tasks)
    assert fingerprint(tiny_encoder.model) == before  # the frozen backbone never moves


def test_sequential_ft_defaults_to_a_fine_tuning_rate(tiny_encoder) -> None:
    learner = bl.create_learner("sequential-ft", tiny_encoder, pconfig(tiny_encoder), {})
    assert learner.train_config(CONFIG).lr == 5e-5
    shared = bl.create_learner("shared-prefix", tiny_encoder, pconfig(tiny_encoder), {})
    assert shared.train_config(CONFIG).lr == CONFIG.lr  # the prefix's own rate


def test_a_save_killed_before_the_switch_keeps_the_previous_state(
    tiny_encoder, tasks, tmp_path, monkeypatch
) -> None:
    tmp_path = tmp_path / "state"
    learner = bl.create_learner("shared-prefix", tiny_encoder, pconfig(tiny_encoder), {})
    learner.learn(tasks[0], CONFIG, progress=False)
    first = bl.save_learner(tmp_path, learner)
    learner.learn(tasks[1], CONFIG, progress=False)
    real_replace = os.replace

    def dies_at_the_pointer(src, dst):
        if Path(dst).name == bl_base.CURRENT:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(bl_base.os, "replace", dies_at_the_pointer)
    with pytest.raises(KeyboardInterrupt):
        bl.save_learner(tmp_path, learner)
    monkeypatch.undo()
    loaded = bl.load_learner(tmp_path, "shared-prefix", tiny_encoder)
    assert loaded is not None and loaded.tasks == ["one"]
    assert (tmp_path / bl_base.CURRENT).read_text().strip() == first.name
    final = bl.save_learner(tmp_path, learner)  # the next save cleans up what was left
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [final.name]


def test_nothing_saved_loads_as_none(tiny_encoder, tmp_path) -> None:
    assert bl.load_learner(tmp_path, "sequential-ft", tiny_encoder) is None


def test_unknown_baselines_and_options_are_refused(tiny_encoder) -> None:
    with pytest.raises(ConfigError, match="unknown baseline 'icarl'"):
        bl.create_learner("icarl", tiny_encoder, pconfig(tiny_encoder), {})
    with pytest.raises(ConfigError, match="unknown option"):
        bl.create_learner("sequential-ft", tiny_encoder, pconfig(tiny_encoder), {"steps": 3})
    with pytest.raises(ConfigError, match="registered twice"):
        bl.register_baseline(bl.SequentialFT)
