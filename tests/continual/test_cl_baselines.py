"""The field's baselines (replay, ewc, lwf, per-task-ft, multitask) on the tiny encoder, each
checked against its published definition: the replay memory's class balance, the EWC penalty
by hand, the LwF targets (and a distillation term of zero before the new task moves anything),
isolation for per-task fine-tuning, and every saved state round-tripping exactly."""

from __future__ import annotations

import pytest
import torch

from continual import baselines as bl
from continual.backbones import fingerprint
from continual.baselines.rehearsal import balanced_memory
from continual.objectives import encoder_features
from continual.train import split_validation
from tasks.errors import ConfigError
from tasks.spec import Example
from tests.continual import test_baselines as plain
from tests.continual.test_baselines import CONFIG, pconfig, scores

tasks = plain.tasks  # the two tiny tasks, a fixture

NEW = ("replay", "ewc", "lwf", "per-task-ft", "multitask")


def test_the_memory_is_class_balanced_and_seeded() -> None:
    rows = [Example(f"a{i}", "a") for i in range(10)] + [Example(f"b{i}", "b") for i in range(3)]
    eight = balanced_memory(rows, 8, seed=0)
    assert sorted(e.target for e in eight) == ["a"] * 5 + ["b"] * 3  # b gives all it has
    six = balanced_memory(rows, 6, seed=0)
    assert sorted(e.target for e in six) == ["a"] * 3 + ["b"] * 3
    assert balanced_memory(rows, 6, seed=0) == six != balanced_memory(rows, 6, seed=1)
    assert len(balanced_memory(rows, 50, seed=0)) == 13


@pytest.mark.parametrize("method", NEW)
def test_each_learns_two_tasks_and_its_saved_state_loads_back_exactly(
    method, tiny_encoder, tasks, tmp_path
) -> None:
    before = fingerprint(tiny_encoder.model)
    learner = bl.create_learner(method, tiny_encoder, pconfig(tiny_encoder), {"lr": 1e-3})
    for data in tasks:
        summary = learner.learn(data, CONFIG, progress=False)
        assert summary["lr"] == 1e-3
    bl.save_learner(tmp_path, learner)
    again = bl.load_learner(tmp_path, method, tiny_encoder)
    assert again is not None and again.tasks == ["one", "two"]
    assert scores(again, tasks) == scores(learner, tasks)
    assert fingerprint(tiny_encoder.model) == before  # the frozen backbone was never touched


def test_replay_keeps_k_balanced_examples_per_task_and_replays_them(tiny_encoder, tasks) -> None:
    learner = bl.create_learner("replay", tiny_encoder, pconfig(tiny_encoder), {"memory": 6})
    learner.learn(tasks[0], CONFIG, progress=False)
    kept = learner.memory["one"]["examples"]
    train, _ = split_validation(tasks[0], CONFIG)
    assert len(kept) == 6 and set(kept) <= set(train)
    assert sorted({e.target for e in kept}) == ["negative", "positive"]
    assert [e.target for e in kept].count("positive") == 3
    assert learner.extra(tasks[0], CONFIG) is not None  # from the second task on, it replays
    term = learner.extra(tasks[1], CONFIG)(list(tasks[1].train[:4]))
    assert term.requires_grad and float(term) > 0
    with pytest.raises(ConfigError, match="memory must be"):
        bl.create_learner("replay", tiny_encoder, pconfig(tiny_encoder), {"memory": 0})


def test_the_ewc_penalty_is_lambda_over_two_times_fisher_weighted_squares(
    tiny_encoder, tasks
) -> None:
    learner = bl.create_learner("ewc", tiny_encoder, pconfig(tiny_encoder), {"lambda": 10.0})
    learner.learn(tasks[0], CONFIG, progress=False)
    params = dict(learner.copy.model.named_parameters())
    assert set(learner.fisher) == set(params)
    assert all(bool((f >= 0).all()) for f in learner.fisher.values())
    assert any(float(f.sum()) > 0 for f in learner.fisher.values())
    assert all(torch.equal(learner.anchor[n], p.detach()) for n, p in params.items())
    assert float(learner.penalty()) == 0.0  # at the anchor
    # by hand: F = 2 on one tensor, theta - anchor = 0.5 there, zero elsewhere
    name = next(iter(params))
    learner.fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    learner.fisher[name] = torch.full_like(params[name], 2.0)
    learner.anchor = {n: p.detach().clone() for n, p in params.items()}
    learner.anchor[name] = params[name].detach() - 0.5
    want = 10.0 / 2 * 2.0 * 0.25 * params[name].numel()
    assert float(learner.penalty()) == pytest.approx(want, rel=1e-5)


def test_lwf_targets_are_the_earlier_heads_softened_outputs(tiny_encoder, tasks) -> None:
    learner = bl.create_learner("lwf", tiny_encoder, pconfig(tiny_encoder), {"temperature": 2.0})
    learner.learn(tasks[0], CONFIG, progress=False)
    texts = [e.text for e in tasks[1].train[:5]]
    got = learner.targets(texts, CONFIG.limits)["one"]
    with torch.no_grad():
        feats = encoder_features(learner.copy, texts, None, CONFIG.limits)
        want = torch.softmax(learner.heads["one"].eval()(feats) / 2.0, dim=-1)
    torch.testing.assert_close(got, want)
    assert torch.allclose(got.sum(-1), torch.ones(5))
    # before the new task moves anything, the distillation term is zero (KL of a distribution
    # with itself), in eval mode so dropout draws nothing
    learner.copy.model.eval()
    term = learner.extra(tasks[1], CONFIG)(list(tasks[1].train[:5]))
    assert abs(float(term)) < 1e-5


def test_lwf_on_a_decoder_is_one_line(tiny_decoder) -> None:
    from continual.modules.prefix import prefix_config_for

    with pytest.raises(ConfigError, match="only an encoder") as e:
        bl.create_learner("lwf", tiny_decoder, prefix_config_for(tiny_decoder, 2, None), {})
    assert "\n" not in str(e.value)


def test_per_task_ft_isolates_tasks_and_multitask_trains_on_all_seen(tiny_encoder, tasks) -> None:
    iso = bl.create_learner("per-task-ft", tiny_encoder, pconfig(tiny_encoder), {"lr": 1e-3})
    iso.learn(tasks[0], CONFIG, progress=False)
    first = scores(iso, tasks[:1])
    iso.learn(tasks[1], CONFIG, progress=False)
    assert scores(iso, tasks[:1]) == first  # task one's own copy did not move
    assert iso.stored_bytes() == 2 * sum(
        p.numel() * p.element_size() for p in tiny_encoder.model.parameters()
    )
    joint = bl.create_learner("multitask", tiny_encoder, pconfig(tiny_encoder), {"lr": 1e-3})
    assert joint.learn(tasks[0], CONFIG, progress=False)["steps"] == CONFIG.steps
    assert joint.learn(tasks[1], CONFIG, progress=False)["steps"] == 2 * CONFIG.steps
    assert set(joint.heads) == {"one", "two"} and set(joint.data) == {"one", "two"}


def test_a_misspelt_baseline_option_is_refused_when_the_stream_is_read() -> None:
    from pipelines.arrival.plan import BaselinePlan

    with pytest.raises(ConfigError, match=r"baseline replay: unknown option\(s\) \['memroy'\]"):
        BaselinePlan.from_dict({"name": "replay", "memroy": 3})
    assert dict(BaselinePlan.from_dict({"name": "ewc", "lambda": 5.0}).options) == {"lambda": 5.0}


def test_per_task_ft_writes_one_model_per_arrival_and_links_the_rest(
    tiny_encoder, tasks, tmp_path
) -> None:
    learner = bl.create_learner("per-task-ft", tiny_encoder, pconfig(tiny_encoder), {"lr": 1e-3})
    learner.learn(tasks[0], CONFIG, progress=False)
    first = bl.save_learner(tmp_path, learner) / "model-0000.safetensors"
    inode = first.stat().st_ino
    again = bl.load_learner(tmp_path, "per-task-ft", tiny_encoder)  # as the next arrival does
    again.learn(tasks[1], CONFIG, progress=False)
    second = bl.save_learner(tmp_path, again)
    assert not first.exists()  # the previous state is gone ...
    assert (second / "model-0000.safetensors").stat().st_ino == inode  # ... its file kept, linked
    assert (second / "model-0001.safetensors").stat().st_nlink == 1  # the new task's, written
    loaded = bl.load_learner(tmp_path, "per-task-ft", tiny_encoder)
    assert scores(loaded, tasks) == scores(again, tasks)
