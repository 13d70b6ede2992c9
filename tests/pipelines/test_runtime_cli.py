"""`--device` and `--dtype` from the command line: recorded with every run, checked in the
no-forgetting evidence, and an unusable choice refused before anything runs."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from pipelines.cli import main
from registry import Registry

FAST = ["--steps", "6", "--lr", "1e-2", "--prefix-length", "3", "--eval-every", "3"]
FAST += ["--batch-size", "8", "--init", "random"]


def cli(*argv: str | Path) -> tuple[int, dict, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + ["--json", "--quiet", "--tracking-uri", "none"])
    return code, json.loads(out.getvalue() or "{}"), err.getvalue()


def test_a_bfloat16_stream_records_its_runtime_and_its_evidence_holds(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("CONTINUAL_DTYPE", raising=False)
    home = tmp_path / "home"
    for i, name in enumerate(("first", "second")):
        train = write_jsonl(f"{name}.jsonl", sentiment(32, seed=i))
        code, out, err = cli(
            "learn", "--backbone", tiny_encoder_dir, "--train", train, "--name", name,
            "--home", home, "--dtype", "bfloat16", *FAST,
        )  # fmt: skip
        assert code == 0, err
    assert "CONTINUAL_DTYPE" not in os.environ  # the choice does not outlive the command
    evidence = json.loads((home / "stream" / "evidence" / "0001.json").read_text())
    assert evidence["runtime"] == {"device": "cpu", "dtype": "bfloat16"}
    assert evidence["checked_by"] == "version counters" and evidence["equal"]
    report = json.loads((home / "report" / "report.json").read_text())
    assert report["evidence"]["ok"] and report["evidence"]["score_tolerance"] == 0.005
    with Registry.open(home, tracking_uri="none") as reg:
        run = reg.run(reg.prefix("second").run_id).config
    assert run["runtime"]["dtype"] == "bfloat16" and run["runtime"]["device"] == "cpu"
    assert run["runtime"]["threads"] >= 1 and run["runtime"]["thread_choice"]["threads"] >= 1


def test_train_records_cpu_float32_by_default(tiny_encoder_dir, write_jsonl, sentiment, tmp_path):
    train = write_jsonl("t.jsonl", sentiment(32))
    code, out, err = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t",
        "--home", tmp_path / "home", *FAST,
    )  # fmt: skip
    assert code == 0, err
    with Registry.open(tmp_path / "home", tracking_uri="none") as reg:
        run = reg.run(reg.prefix("t").run_id).config
    assert (run["runtime"]["device"], run["runtime"]["dtype"]) == ("cpu", "float32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_an_absent_device_is_one_error_line_before_anything(tmp_path) -> None:
    code, out, err = cli("registry", "tasks", "--home", tmp_path / "home", "--device", "cuda")
    assert code == 2 and "no CUDA GPU here" in out["error"]
    assert not (tmp_path / "home").exists()
