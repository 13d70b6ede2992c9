"""`--module KIND` and `module:` in stream entries: a LoRA (or prompt, P-tuning, (IA)³, BitFit) task
arrives, is registered with its kind, is predicted and re-evaluated like a prefix, and a stream
mixing three kinds forgets nothing (every column constant after its arrival)."""

from __future__ import annotations

import pytest
import torch

from pipelines.arrival.plan import ArrivalPlan
from pipelines.stream import arrival_plan
from registry import Registry
from tasks.errors import ConfigError
from tests.pipelines.test_arrival_defects import cli
from tests.pipelines.test_stream_run import TASKS, report, run, write_tasks

FAST = ["--steps", "8", "--lr", "1e-2", "--eval-every", "4", "--batch-size", "8"]


def test_train_with_module_lora_registers_a_lora_and_predicts_with_it(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    train = write_jsonl("t.jsonl", sentiment(48, seed=1))
    ev = write_jsonl("e.jsonl", sentiment(24, seed=2))
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--eval", ev, "--name", "t",
        "--home", home, *FAST, "--module", "lora", "--lora-rank", "2", "--lora-alpha", "4",
    )  # fmt: skip
    assert code == 0, doc
    assert doc["module"] == "lora" and doc["stored_params"] > 0
    with Registry.open(home, tracking_uri="none") as reg:
        record = reg.prefix("t")
        assert record.kind == "lora" and record.config["rank"] == 2
    code, again = cli("evaluate", "--task", "t", "--eval", ev, "--home", home)
    assert code == 0, again
    assert again["predictions_sha256"] == doc["predictions_sha256"]
    code, said = cli("predict", "--task", "t", "a good film", "--home", home)
    assert code == 0 and said["predictions"][0]["prediction"] in ("positive", "negative"), said


@pytest.mark.parametrize("kind", ["prompt", "ptuning", "ia3", "bitfit"])
def test_every_kind_arrives_through_train_and_evaluates_the_same_again(
    kind, tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    train = write_jsonl("t.jsonl", sentiment(48, seed=1))
    ev = write_jsonl("e.jsonl", sentiment(24, seed=2))
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--eval", ev, "--name", "t",
        "--home", home, *FAST, "--module", kind, "--max-length", "64",
    )  # fmt: skip
    assert code == 0 and doc["module"] == kind, doc
    code, again = cli("evaluate", "--task", "t", "--eval", ev, "--home", home)
    assert code == 0 and again["predictions_sha256"] == doc["predictions_sha256"], again


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--lora-rank", "4"], "add --module lora"),
        (["--module", "lora", "--lora-rank", "0"], "rank must be"),
        (["--module", "lora", "--prefix-length", "4"], "--prefix-length sets a prefix"),
        (["--module", "lora", "--lora-targets", "nope"], "matches no layer"),
        (["--prompt-length", "4"], "add --module prompt"),
        (["--module", "prompt", "--prompt-length", "0"], "prompt length must be"),
        (["--module", "prompt", "--prefix-length", "4"], "use --prompt-length"),
        (["--module", "lora", "--prompt-length", "4"], "add --module prompt"),
        (["--module", "prompt", "--prompt-length", "100"], "shorten --prompt-length"),
    ],
)
def test_bad_module_options_are_one_line_and_register_nothing(
    flags, says, tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    train = write_jsonl("t.jsonl", sentiment(40))
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t",
        "--home", home, *FAST, *flags,
    )  # fmt: skip
    assert code == 2 and says in doc["error"] and "\n" not in doc["error"], doc
    if (home / "registry.db").exists():
        with Registry.open(home, tracking_uri="none") as reg:
            assert not reg.tasks()


def test_a_stream_entry_names_its_module_and_it_travels_in_the_job() -> None:
    plan = arrival_plan(
        {"name": "a", "dataset": "trec", "module": {"kind": "lora", "rank": 4}}, where="e"
    )
    assert (plan.module, plan.module_options) == ("lora", {"rank": 4})
    assert ArrivalPlan.from_dict(plan.to_dict()) == plan
    short = arrival_plan({"name": "b", "dataset": "trec", "module": "lora"}, where="e")
    assert short.module == "lora" and short.module_options == {}
    plain = arrival_plan({"name": "c", "dataset": "trec"}, where="e")
    assert plain.module == "prefix" and "module" not in plain.to_dict()
    for entry, says in (
        ({"module": "adapter"}, "unknown task module kind"),
        ({"module": {"rank": 4}}, "module must be a kind's name"),
        ({"module": {"kind": "lora", "rnak": 4}}, "unknown lora option"),
        ({"module": "lora", "tune": 4}, "tune searches a prefix's options"),
        ({"module": {"kind": "prefix", "rank": 4}}, "a prefix takes no module options"),
    ):
        with pytest.raises(ConfigError, match=says):
            arrival_plan({"name": "d", "dataset": "trec", **entry}, where="e")


@pytest.mark.parametrize(
    ("second", "third"),
    [("{kind: lora, rank: 2}", "ia3"), ("{kind: prompt, length: 4}", "ptuning")],
)
def test_a_stream_of_three_module_kinds_forgets_nothing(
    second, third, tmp_path, tiny_encoder_dir, sentiment
) -> None:
    folder = tmp_path / "data"
    write_tasks(folder, sentiment)
    modules = {"sentiment": "", "opinion": f", module: {second}", "mood": f", module: {third}"}
    arrivals = "\n".join(
        f"  - {{name: {t}, train: {t}-train.jsonl, eval: {t}-eval.jsonl{modules[t]}}}"
        for t, _, _ in TASKS
    )
    path = folder / "stream.yaml"
    path.write_text(
        f"backbone: {tiny_encoder_dir}\n"
        "defaults: {steps: 16, lr: 1.0e-2, eval_every: 8, batch_size: 8, max_length: 64}\n"
        f"arrivals:\n{arrivals}\n",
        encoding="utf-8",
    )
    home = tmp_path / "home"
    code, out, err = run("stream", "run", path, "--home", home)
    assert code == 0, err
    with Registry.open(home, tracking_uri="none") as reg:
        kinds = {name: reg.prefix(name).kind for name, _, _ in TASKS}
    kind = second.split(",")[0].removeprefix("{kind: ")
    assert kinds == {"sentiment": "prefix", "opinion": kind, "mood": third}
    doc = report(home)
    assert [t.get("module") for t in doc["tasks"]] == [None, kind, third]
    m = doc["methods"]["prefix"]
    R = m["R"]
    for j in range(3):
        assert len({R[i][j] for i in range(j, 3)}) == 1, R
    assert m["bwt"] == 0.0 and m["forgetting_max"] == 0.0
    assert doc["evidence"]["ok"]


def test_a_similar_task_start_draws_on_modules_of_the_same_kind_only(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    for name, seed in (("a", 1), ("b", 3)):
        train = write_jsonl(f"{name}.jsonl", sentiment(48, seed=seed))
        code, doc = cli(
            "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", name,
            "--home", home, *FAST, "--module", "lora",
            *(["--init", "nearest"] if name == "b" else []),
        )  # fmt: skip
        assert code == 0, doc
    with Registry.open(home, tracking_uri="none") as reg:
        (edge,) = reg.show("b").lineage
        assert edge.source_task == "a" and edge.method == "init:nearest"
    train = write_jsonl("c.jsonl", sentiment(48, seed=5))
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "c",
        "--home", home, *FAST, "--module", "ia3", "--init", "nearest",
    )  # fmt: skip
    assert code == 2 and "ia3 of the same shape" in doc["error"], doc


def test_the_field_s_baselines_run_in_a_stream_beside_the_prefixes(
    tmp_path, tiny_encoder_dir, sentiment
) -> None:
    """replay, ewc, lwf, per-task-ft and multitask as stream baselines: each is scored on every
    earlier task after every arrival; per-task fine-tuning, isolated, forgets nothing."""
    from tests.pipelines.test_stream_run import stream_file

    folder = tmp_path / "data"
    write_tasks(folder, sentiment)
    names = ["replay", "ewc", "lwf", "per-task-ft", "multitask"]
    path = stream_file(folder, tiny_encoder_dir, f"[{', '.join(names)}]")
    home = tmp_path / "home"
    code, out, err = run("stream", "run", path, "--home", home)
    assert code == 0, err
    doc = report(home)
    assert set(names) <= set(doc["methods"])
    for name in names:
        R = doc["methods"][name]["R"]
        assert all(R[i][j] is not None for i in range(3) for j in range(i + 1)), (name, R)
    iso = doc["methods"]["per-task-ft"]
    assert iso["bwt"] == 0.0 and iso["forgetting_max"] == 0.0


def test_a_prompt_starts_from_the_description_s_words(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    """`--init words` on a prompt: the stored start is the backbone's embeddings of the
    description (one step at a vanishing rate: what is registered is the start)."""
    from continual.backbones import load_backbone
    from continual.modules import module_kind

    home = tmp_path / "home"
    train = write_jsonl("t.jsonl", sentiment(32, seed=1))
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t", "--home", home,
        "--module", "prompt", "--prompt-length", "4", "--init", "words", "--description",
        "good or bad", "--steps", "1", "--lr", "1e-9", "--batch-size", "8", "--max-length", "64",
    )  # fmt: skip
    assert code == 0, doc
    backbone = load_backbone(str(tiny_encoder_dir))
    with Registry.open(home, tracking_uri="none") as reg:
        tensors, record = reg.load_prefix(reg.prefix("t").id, backbone.fingerprint)
    config = module_kind("prompt").config_from_dict(record.config)
    assert record.kind == "prompt" and config.init == "words" and config.length == 4
    want = module_kind("prompt").start_from_text(backbone, config, "good or bad")
    torch.testing.assert_close(tensors["prompt"], want["prompt"], atol=1e-6, rtol=0)
    random = module_kind("prompt").build(config).eject()["prompt"]
    assert (tensors["prompt"] - random).abs().max() > 1e-2


def test_the_one_line_summary_names_the_module_kind() -> None:
    from pipelines.cli_output import human

    result = {"task": "t", "metric": "accuracy", "score": 0.5, "steps": 3, "train_seconds": 1.0,
              "stored_params": 6150, "stored_fraction": 0.0003}  # fmt: skip
    assert "prefix+head 6,150 params" in human(result)  # records without a module: a prefix
    assert "prompt+head 6,150 params" in human(result | {"module": "prompt"})
