"""The device path, on the GPU where there is one (on the CPU elsewhere, CI included): every
module kind and every baseline trains and answers there in float32 and bfloat16 with the
backbone untouched, each baseline read back from disk between tasks as a stream does, rows of
several tasks share a pass as each answers alone, a prefix trained on the CPU answers the same
on the GPU, and `learn --device cuda` records its runtime and checks the
backbone by version counters (the weights' sha256 on the CPU). On a GPU machine run
`python -m pytest tests/continual/test_cuda.py tests/continual/test_runtime.py
tests/pipelines/test_runtime_cli.py`; it passed on an H200 (torch 2.11, transformers 5.17)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os

import pytest
import torch

from continual import baselines as bl
from continual.backbones import load_backbone
from continual.inference import evaluate, predict
from continual.modules import module_kind
from continual.runtime import Runtime
from continual.train import TrainConfig, train
from pipelines.cli import main
from tasks.spec import TaskSpec
from tests.continual.test_baselines import CONFIG, pconfig, scores
from tests.continual.test_module_seam import data

# The GPU where there is one; elsewhere (CI) the same checks run on the CPU, so they stay true
# between GPU runs. CONTINUAL_TEST_DEVICE picks one.
DEVICE = os.environ.get("CONTINUAL_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")

KINDS = {"prefix": {}, "lora": {"rank": 4}, "ptuning": {"length": 3}, "ia3": {}, "bitfit": {}}
RUN = TrainConfig(steps=12, batch_size=8, lr=1e-2, eval_every=6, patience=0)


def _on(folder, dtype: str):
    return load_backbone(str(folder), runtime=Runtime(device=DEVICE, dtype=dtype))


def _config(backbone, kind: str):
    plugin = module_kind(kind)
    if kind == "prefix":
        return plugin.config_for(backbone, length=3)
    return plugin.config_for(backbone, **KINDS[kind])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("which", ["tiny_encoder_dir", "tiny_decoder_dir"])
def test_every_kind_trains_and_answers_on_the_gpu(request, which, dtype, sentiment) -> None:
    bb = _on(request.getfixturevalue(which), dtype)
    assert next(bb.model.parameters()).device.type == DEVICE
    task = data(sentiment(48, seed=1), sentiment(16, seed=2))
    trained = []
    kinds = [k for k in KINDS if not (k == "bitfit" and bb.kind == "decoder")]  # no biases
    for kind in kinds:
        result = train(bb, task, _config(bb, kind), RUN, progress=False)
        assert all(math.isfinite(x) for x in result.losses), kind
        assert all(t.dtype == torch.float32 for t in result.task.tensors.values()), kind
        ev = evaluate(bb, result.task, task.eval, batch_size=4)
        assert ev.n == len(task.eval) and 0.0 <= ev.score <= 1.0
        trained.append(result.task)
    assert bb.unchanged()  # version counters: nothing wrote into the frozen weights
    # Rows of all five kinds in one call answer as each kind does alone.
    texts = [e.text for e in task.eval[:10]]
    items = [(i % len(trained), t) for i, t in enumerate(texts)]
    mixed = predict(bb, trained, items, batch_size=len(items))
    for k, module in enumerate(trained):
        rows = [i for i, (t, _) in enumerate(items) if t == k]
        alone = predict(bb, [module], [(0, texts[r]) for r in rows])
        if dtype == "float32":
            assert [mixed[r] for r in rows] == alone, kinds[k]


def test_a_prefix_trained_on_the_cpu_answers_the_same_on_the_gpu(
    tiny_encoder_dir, sentiment
) -> None:
    cpu = load_backbone(str(tiny_encoder_dir))
    task = data(sentiment(48, seed=3), sentiment(32, seed=4))
    result = train(cpu, task, _config(cpu, "prefix"), RUN, progress=False)
    here = evaluate(cpu, result.task, task.eval, batch_size=8)
    there = evaluate(_on(tiny_encoder_dir, "float32"), result.task, task.eval, batch_size=8)
    assert there.predictions == here.predictions


@pytest.mark.parametrize("method", bl.baselines())
def test_every_baseline_learns_and_reloads_on_the_gpu(
    method, tiny_encoder_dir, sentiment, tmp_path
):
    bb = _on(tiny_encoder_dir, "float32")
    tasks = []
    for name, labels, seed in (("one", ("positive", "negative"), 1), ("two", ("yes", "no"), 2)):
        spec = TaskSpec(name=name, kind="classification", labels=labels)
        rows, held = (
            sentiment(32, seed=seed, labels=labels),
            sentiment(16, seed=seed + 9, labels=labels),
        )
        tasks.append(data(rows, held, spec))
    learner = bl.create_learner(method, bb, pconfig(bb), {"lr": 1e-3})
    for task in tasks:  # saved and read back between tasks, as a stream's arrivals do
        learner.starting_points(task, CONFIG)
        learner.learn(task, CONFIG, progress=False)
        bl.save_learner(tmp_path, learner)
        again = bl.load_learner(tmp_path, method, bb)
        assert scores(again, tasks[: len(again.tasks)]) == scores(
            learner, tasks[: len(again.tasks)]
        )
        learner = again
    assert bb.unchanged()


def test_learn_on_cuda_records_the_runtime_and_checks_by_version_counters(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    fast = ["--steps", "6", "--lr", "1e-2", "--prefix-length", "3", "--eval-every", "3"]
    fast += ["--batch-size", "8", "--init", "random", "--device", DEVICE]
    for i, name in enumerate(("first", "second")):
        train_file = write_jsonl(f"{name}.jsonl", sentiment(32, seed=i))
        out, err = io.StringIO(), io.StringIO()
        argv = ["learn", "--backbone", str(tiny_encoder_dir), "--train", str(train_file)]
        argv += ["--name", name, "--home", str(home), *fast, "--json", "--quiet"]
        argv += ["--tracking-uri", "none"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        assert code == 0, err.getvalue()
    evidence = json.loads((home / "stream" / "evidence" / "0001.json").read_text())
    assert evidence["runtime"] == {"device": DEVICE, "dtype": "float32"}
    exact = DEVICE == "cpu"  # CPU float32 compares the weights' sha256, elsewhere the counters
    assert evidence["checked_by"] == ("sha256 of the weights" if exact else "version counters")
    assert evidence["equal"]
    report = json.loads((home / "report" / "report.json").read_text())
    assert report["evidence"]["ok"]
