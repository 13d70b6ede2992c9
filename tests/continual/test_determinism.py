"""THE determinism test: the same stored prefix on the same data gives identical predictions,
hence the same predictions sha256, run after run in one process and process after process
(`continual evaluate --prefix DIR --eval FILE --json` in fresh interpreters), whatever the
batch size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from continual import checkpoint
from continual.inference import TrainedTask, evaluate, predict
from continual.modules.prefix import PrefixConfig
from continual.objectives import TextLimits
from continual.scoring import predictions_sha256
from continual.train import TrainConfig, train
from tasks.spec import Example, TaskData, TaskSpec

ROOT = Path(__file__).resolve().parents[2]


def cli_evaluate(prefix: Path, eval_file: Path, cache: Path, cwd: Path) -> subprocess.Popen:
    """Start `python -m pipelines.cli evaluate --prefix DIR --eval FILE --json`."""
    env = {**os.environ, "CONTINUAL_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "evaluate",
            "--prefix",
            str(prefix),
            "--eval",
            str(eval_file),
            "--json",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def classification_prefix(tmp_path_factory, tiny_encoder, sentiment):
    """A prefix trained on the tiny encoder and stored as a prefix folder; its eval file, the
    eval examples and the predictions sha256 measured right after training."""
    d = tmp_path_factory.mktemp("determinism-enc")
    spec = TaskSpec(name="sentiment", kind="classification", labels=("positive", "negative"))
    train_rows, eval_rows = sentiment(40, seed=3), sentiment(24, seed=4)
    examples = [Example(r["text"], r["label"]) for r in eval_rows]
    data = TaskData(
        spec=spec,
        train=tuple(Example(r["text"], r["label"]) for r in train_rows),
        eval=tuple(examples),
        fingerprint="test",
    )
    g = tiny_encoder.geometry
    pconfig = PrefixConfig(
        length=3,
        layers=g.layers,
        kv_heads=g.kv_heads,
        head_dim=g.head_dim,
        hidden_size=g.hidden_size,
        reparam_hidden=32,
    )
    config = TrainConfig(steps=10, batch_size=8, lr=1e-2, eval_every=5)
    result = train(tiny_encoder, data, pconfig, config, progress=False)
    trained_sha = evaluate(tiny_encoder, result.task, examples).predictions_sha256
    folder = checkpoint.save(d / "sentiment", result.task, {"backbone": tiny_encoder.info()})
    eval_file = d / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in eval_rows), encoding="utf-8")
    return folder, eval_file, examples, trained_sha


@pytest.fixture(scope="module")
def generation_prefix(tmp_path_factory, tiny_decoder):
    """A random generation prefix for the tiny decoder, stored as `train` would store it."""
    d = tmp_path_factory.mktemp("determinism-dec")
    g = tiny_decoder.geometry
    config = PrefixConfig(
        length=5,
        layers=g.layers,
        kv_heads=g.kv_heads,
        head_dim=g.head_dim,
        hidden_size=g.hidden_size,
        positions="shifted",
    )
    spec = TaskSpec(name="summary", kind="generation", target_field="target")
    task = TrainedTask(
        spec=spec,
        config=config,
        tensors={
            "prefix": torch.randn(5, config.flat_dim, generator=torch.Generator().manual_seed(5))
        },
        limits=TextLimits(max_length=32, max_target_length=6),
    )
    folder = checkpoint.save(d / "summary", task, {"backbone": tiny_decoder.info()})
    rows = [
        {"text": t, "target": "the cat sat on the mat"}
        for t in (
            "the movie was good",
            "bad",
            "i liked it",
            "hello world",
            "two dogs",
            "we saw the sea and the sky",
            "a",
            "five red birds",
        )
    ]
    eval_file = d / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder, eval_file, [Example(r["text"], r["target"]) for r in rows]


def test_same_prefix_same_predictions_run_after_run(tiny_encoder, classification_prefix) -> None:
    folder, _, examples, trained_sha = classification_prefix
    task, _ = checkpoint.load(folder, backbone_fingerprint=tiny_encoder.fingerprint)
    items = [(0, e.text) for e in examples]
    runs = [predict(tiny_encoder, [task], items, batch_size=b) for b in (32, 32, 1, 7)]
    assert all(r == runs[0] for r in runs)
    again, _ = checkpoint.load(folder)
    assert predict(tiny_encoder, [again], items) == runs[0]
    # ...and they are the predictions made by the prefix before it was stored.
    assert predictions_sha256(runs[0]) == trained_sha


def test_same_generations_run_after_run(tiny_decoder, generation_prefix) -> None:
    folder, _, examples = generation_prefix
    task, _ = checkpoint.load(folder, backbone_fingerprint=tiny_decoder.fingerprint)
    results = [evaluate(tiny_decoder, task, examples, batch_size=b) for b in (32, 32, 3, 1)]
    assert len({r.predictions_sha256 for r in results}) == 1
    assert len(set(results[0].predictions)) > 1  # real, varied generations were compared


@pytest.mark.slow  # about 20 s: three fresh interpreters each import torch and transformers
def test_same_predictions_process_after_process(
    tiny_encoder, tiny_decoder, classification_prefix, generation_prefix, tmp_path, session_cache
) -> None:
    """Fresh processes, run side by side, agree with each other and with this process: two
    for the classification prefix, one for the generation prefix (no --text/--target-field
    given: the stored task's own fields are read)."""
    cases = [
        (tiny_encoder, *classification_prefix[:3]),
        (tiny_encoder, *classification_prefix[:3]),
        (tiny_decoder, *generation_prefix),
    ]
    procs = [cli_evaluate(folder, file, session_cache, tmp_path) for _, folder, file, _ in cases]
    results = [finish(p) for p in procs]
    assert results[0]["predictions_sha256"] == results[1]["predictions_sha256"]
    for (backbone, folder, _, examples), doc in zip(cases, results, strict=True):
        task, _ = checkpoint.load(folder, backbone_fingerprint=backbone.fingerprint)
        here = evaluate(backbone, task, examples)
        assert doc["predictions_sha256"] == here.predictions_sha256
        assert doc["score"] == here.score and doc["n"] == here.n == len(examples)
    assert results[0]["predictions_sha256"] == classification_prefix[3]
    # Evaluating an exported prefix writes no file where it runs.
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
