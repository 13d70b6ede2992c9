"""`--no-training-state` / `training_state: false`: the prefix is registered without its
training state (the reparameterization and optimizer moments, ~400x the prefix on minilm), so
a long stream stores the prefixes only; such a task cannot be resumed, and says so."""

from __future__ import annotations

import pytest

from pipelines.arrival.plan import ArrivalPlan
from pipelines.stream import arrival_plan
from registry import Registry
from tasks.errors import ConfigError
from tests.pipelines.test_arrival_defects import FAST, cli

RESUME = ["--steps", "8", "--lr", "1e-2", "--eval-every", "4", "--batch-size", "8"]


def test_a_task_learnt_without_its_training_state_stores_none_and_cannot_resume(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    data = write_jsonl("t.jsonl", sentiment(40, seed=2))
    for name, flags in (("kept", []), ("light", ["--no-training-state"])):
        code, doc = cli(
            "learn", "--backbone", tiny_encoder_dir, "--train", data, "--name", name,
            "--home", home, *FAST, *flags,
        )  # fmt: skip
        assert code == 0, doc
    with Registry.open(home, tracking_uri="none") as reg:
        kept, light = reg.prefix("kept"), reg.prefix("light")
        assert kept.optimizer_path is not None and light.optimizer_path is None
        assert reg.load_optimizer_state("light") is None
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", data, "--resume", "light",
        "--home", home, *RESUME,
    )  # fmt: skip
    assert code == 2 and "no stored training state" in doc["error"]
    assert "--no-training-state" in doc["error"] and "\n" not in doc["error"]
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", data, "--resume", "kept",
        "--home", home, *RESUME,
    )  # fmt: skip
    assert code == 0, doc


def test_a_stream_entry_may_drop_the_training_state_and_it_travels_in_the_job() -> None:
    plan = arrival_plan(
        {"name": "a", "dataset": "trec", "training_state": False}, where="arrivals[0]"
    )
    assert plan.training_state is False
    assert ArrivalPlan.from_dict(plan.to_dict()).training_state is False
    default = arrival_plan({"name": "b", "dataset": "trec"}, where="arrivals[1]")
    assert default.training_state is True and "training_state" not in default.to_dict()
    with pytest.raises(ConfigError, match="training_state must be true or false"):
        arrival_plan({"name": "c", "dataset": "trec", "training_state": "no"}, where="arrivals[2]")
