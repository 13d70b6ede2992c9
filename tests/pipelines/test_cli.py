"""The `continual` command: the `--json` contract, where common options go, `train` end to end on
a tiny encoder with local files, `predict` from an exported prefix, and bad input refused with one
`error:` line and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.cli import main
from tasks.assets import sha256_file

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "task",
    "backbone",
    "backbone_fingerprint",
    "metric",
    "score",
    "steps",
    "trainable_params",
    "stored_params",
    "prefix_path",
    "prefix_sha256",
    "predictions_sha256",
    "seconds",
}


def run_cli(args: list[str], *, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    """`python -m pipelines.cli ARGS` in a fresh process, with a private asset cache."""
    env = {**os.environ, "CONTINUAL_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each command from an empty folder, with no workspace from the environment, so a
    default `./.continual` never lands in the repository."""
    monkeypatch.chdir(tmp_path)
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def listing(folder: Path) -> list[str]:
    """The files under `folder` (empty folders do not count as written)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sentiment) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli-data")
    out = {}
    for name, rows in (("train", sentiment(60, seed=1)), ("eval", sentiment(20, seed=2))):
        out[name] = d / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder_dir, files, session_cache):
    """`continual train ... --json --out DIR` run in-process once for the module."""
    work = tmp_path_factory.mktemp("cli-train")
    home, out = work / "home", work / "export"
    argv = [
        "train",
        "--backbone",
        str(tiny_encoder_dir),
        "--train",
        str(files["train"]),
        "--eval",
        str(files["eval"]),
        "--name",
        "sentiment",
        "--steps",
        "30",
        "--lr",
        "1e-2",
        "--prefix-length",
        "4",
        "--eval-every",
        "10",
        "--json",
        "--quiet",
        "--home",
        str(home),
        "--out",
        str(out),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTINUAL_CACHE", str(session_cache))
        mp.chdir(work)
        code, stdout = _main_stdout(argv)
    assert code == 0, stdout
    return json.loads(stdout), home, out, work


def _main_stdout(argv: list[str]) -> tuple[int, str]:
    """Run `main(argv)` with stdout captured (for module-scoped fixtures, where capsys is not)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


# --- the --json contract -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "key"),
    [(["backbones", "list", "--json"], "backbones"), (["data", "list", "--json"], "datasets")],
)
def test_list_prints_exactly_one_json_object(args, key, tmp_path, session_cache) -> None:
    proc = run_cli(args, cwd=tmp_path, cache=session_cache)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout is one object
    assert isinstance(doc, dict) and isinstance(doc[key], list) and doc[key]
    assert proc.stdout.count("\n") == 1
    assert listing(tmp_path) == []  # listing writes nothing where it runs


def test_backbones_list_names_the_defaults(capsys) -> None:
    assert main(["backbones", "list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)["backbones"]}
    assert entries["minilm"]["kind"] == "encoder" and entries["smollm2"]["kind"] == "decoder"
    assert all(len(e["sha256"]) == 64 and "==" in e["package"] for e in entries.values())


@pytest.mark.parametrize(
    "argv",
    [
        ["backbones", "list", "--json", "--home", "{home}"],
        ["--json", "--home", "{home}", "backbones", "list"],
        ["--home", "{home}", "backbones", "list", "--json"],
        ["--json", "data", "list", "--home", "{home}"],
    ],
)
def test_common_options_before_or_after_the_subcommand(argv, tmp_path, capsys) -> None:
    home = tmp_path / "home"
    assert main([a.format(home=home) for a in argv]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)
    assert not home.exists()  # listing never creates a workspace


def test_without_json_output_is_not_json(capsys) -> None:
    assert main(["backbones", "list"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out


# --- train, evaluate, predict end to end --------------------------------------------------------


def test_train_summary(trained, tiny_encoder) -> None:
    summary, home, out, _ = trained
    assert SUMMARY_KEYS <= set(summary)
    assert summary["task"] == "sentiment" and summary["metric"] == "accuracy"
    assert 0.0 <= summary["score"] <= 1.0
    assert summary["steps"] <= 30 and summary["trainable_params"] > summary["stored_params"] > 0
    assert summary["backbone_fingerprint"] == tiny_encoder.fingerprint
    assert len(summary["prefix_sha256"]) == len(summary["predictions_sha256"]) == 64
    assert summary["seconds"] > 0


def test_train_stores_the_prefix_in_the_workspace(trained) -> None:
    summary, home, _, _ = trained
    stored = Path(summary["prefix_path"])
    assert stored.is_file() and stored.is_relative_to(home)
    assert sha256_file(stored) == summary["prefix_sha256"]


def test_train_exports_the_same_tensors(trained) -> None:
    summary, _, out, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["prefix.json", "prefix.safetensors"]
    doc = json.loads((out / "prefix.json").read_text())
    assert doc["sha256"] == sha256_file(out / "prefix.safetensors")
    assert doc["backbone"]["fingerprint"] == summary["backbone_fingerprint"]
    exported = load_file(str(out / "prefix.safetensors"))
    stored = load_file(summary["prefix_path"])
    assert "prefix" in exported and exported.keys() <= stored.keys()
    assert all(torch.equal(t, stored[k]) for k, t in exported.items())


def test_training_writes_only_in_home_and_out(trained) -> None:
    _, _, _, work = trained
    assert {p.split(os.sep)[0] for p in listing(work)} == {"home", "export"}


def test_predict_from_the_export(trained, capsys) -> None:
    _, _, out, _ = trained
    texts = ["the movie was good", "a bad film"]
    assert main(["predict", "--prefix", str(out), *texts, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["task"] == "sentiment"
    assert [p["text"] for p in doc["predictions"]] == texts
    assert {p["prediction"] for p in doc["predictions"]} <= {"positive", "negative"}


def test_evaluate_reproduces_the_training_summary(trained, files, capsys) -> None:
    summary, _, out, _ = trained
    assert main(["evaluate", "--prefix", str(out), "--eval", str(files["eval"]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["predictions_sha256"] == summary["predictions_sha256"]
    assert doc["score"] == summary["score"] and doc["n"] == 20


def test_evaluate_reads_other_field_names_when_told(trained, files, tmp_path, capsys) -> None:
    summary, _, out, _ = trained
    renamed = tmp_path / "renamed.jsonl"
    rows = [json.loads(line) for line in files["eval"].read_text().splitlines()]
    renamed.write_text(
        "".join(json.dumps({"body": r["text"], "y": r["label"]}) + "\n" for r in rows),
        encoding="utf-8",
    )
    assert (
        main(
            [
                "evaluate",
                "--prefix",
                str(out),
                "--eval",
                str(renamed),
                "--text-field",
                "body",
                "--label-field",
                "y",
                "--json",
            ]
        )
        == 0
    )
    assert (
        json.loads(capsys.readouterr().out)["predictions_sha256"] == summary["predictions_sha256"]
    )
    assert main(["evaluate", "--prefix", str(out), "--eval", str(renamed)]) != 0
    assert "field 'text' is missing" in capsys.readouterr().err


def test_human_summary_is_one_line(trained, files, capsys) -> None:
    _, _, out, _ = trained
    assert main(["evaluate", "--prefix", str(out), "--eval", str(files["eval"])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metrics: sentiment · accuracy")


# --- bad input ---------------------------------------------------------------------------------


def _bad_inputs(d: Path, good_train: Path) -> dict[str, tuple[list[str], Path]]:
    """name -> (extra argv, the file the message must name)."""
    d.mkdir(parents=True, exist_ok=True)
    no_field = d / "no_field.jsonl"
    no_field.write_text('{"text": "good", "sentiment": "positive"}\n' * 3, encoding="utf-8")
    unseen = d / "unseen.jsonl"
    unseen.write_text(
        '{"text": "good", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n',
        encoding="utf-8",
    )
    latin1 = d / "latin1.jsonl"
    latin1.write_bytes('{"text": "café good", "label": "positive"}\n'.encode("latin-1"))
    empty = d / "empty.jsonl"
    empty.write_bytes(b"")
    missing = d / "missing.jsonl"
    return {
        "missing train file": (["--train", str(missing)], missing),
        "missing field": (["--train", str(no_field)], no_field),
        "unseen label in eval": (["--train", str(good_train), "--eval", str(unseen)], unseen),
        "undecodable file": (["--train", str(latin1)], latin1),
        "empty file": (["--train", str(good_train), "--eval", str(empty)], empty),
    }


BAD = [
    "missing train file",
    "missing field",
    "unseen label in eval",
    "undecodable file",
    "empty file",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line_and_writes_nothing(
    case, tmp_path, tiny_encoder_dir, files, capfd, monkeypatch
) -> None:
    extra, named = _bad_inputs(tmp_path / "data", files["train"])[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    home = tmp_path / "home"
    capfd.readouterr()
    code = main(
        [
            "train",
            "--backbone",
            str(tiny_encoder_dir),
            "--name",
            "sentiment",
            "--steps",
            "2",
            "--quiet",
            "--home",
            str(home),
            *extra,
        ]
    )
    out, err = capfd.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and str(named) in lines[0]
    assert out == ""
    assert listing(home) == [] and listing(work) == []


def test_bad_input_in_a_real_process(tmp_path, tiny_encoder_dir, files, session_cache) -> None:
    extra, named = _bad_inputs(tmp_path / "data", files["train"])["undecodable file"]
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(
        ["train", "--backbone", str(tiny_encoder_dir), "--name", "sentiment", "--json", *extra],
        cwd=work,
        cache=session_cache,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(named) in lines[0]
    assert "line 1" in lines[0] and "UTF-8" in lines[0]
    doc = json.loads(proc.stdout)  # --json: still exactly one object, saying what failed
    assert doc["type"] == "DataError" and str(named) in doc["error"]
    assert listing(work) == []
