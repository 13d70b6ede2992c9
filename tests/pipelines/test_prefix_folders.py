"""One prefix-folder format, readable wherever the help says a folder goes (`registry import`,
`evaluate --prefix`, `predict --prefix`, `train --out`), old spellings included; and a prefix
imported without its training run served by `--task` like any other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from tasks.formats import PREFIX_FORMAT, PREFIX_FORMATS_READ
from tests.pipelines.test_stream_run import run

FAST = ["--steps", "12", "--lr", "1e-2", "--prefix-length", "4", "--batch-size", "8"]
TEXTS = ["the movie was good", "a bad film"]
OLD = ("continual-prefix/1", "continual.prefix/1")  # train --out's and registry export's


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_encoder_dir, sentiment) -> dict[str, Path]:
    """A task trained with `--out`, exported in both formats, and its data files."""
    root = tmp_path_factory.mktemp("folders")
    paths = {"home": root / "home", "out": root / "out"}
    for split, n, seed in (("train", 40, 1), ("eval", 16, 2)):
        paths[split] = root / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in sentiment(n, seed=seed)))
    code, _, err = run(
        "train", "--backbone", tiny_encoder_dir, "--train", paths["train"], "--eval",
        paths["eval"], "--name", "sentiment", "--home", paths["home"], "--out", paths["out"], *FAST,
    )  # fmt: skip
    assert code == 0, err
    for fmt in ("safetensors", "peft"):
        paths[fmt] = root / f"export-{fmt}"
        code, _, err = run(
            "registry", "export", "sentiment", "--format", fmt, "--out", paths[fmt],
            "--home", paths["home"],
        )  # fmt: skip
        assert code == 0, err
    return paths


def predictions(*where: str | Path) -> list[str]:
    code, doc, err = run("predict", *where, *TEXTS)
    assert code == 0, err
    return [p["prediction"] for p in doc["predictions"]]


def test_every_writer_writes_the_one_format(made) -> None:
    assert PREFIX_FORMAT in PREFIX_FORMATS_READ and set(OLD) <= set(PREFIX_FORMATS_READ)
    for folder in (made["out"], made["safetensors"]):
        assert json.loads((folder / "prefix.json").read_text())["format"] == PREFIX_FORMAT
        with safe_open(folder / "prefix.safetensors", "pt") as f:
            assert f.metadata()["format"] == PREFIX_FORMAT


def test_an_export_is_served_by_predict_and_evaluate(made) -> None:
    want = predictions("--task", "sentiment", "--home", made["home"])
    assert predictions("--prefix", made["safetensors"]) == want
    assert predictions("--prefix", made["out"]) == want
    code, doc, err = run("evaluate", "--prefix", made["safetensors"], "--eval", made["eval"])
    assert code == 0, err
    code, by_task, err = run(
        "evaluate", "--task", "sentiment", "--home", made["home"], "--eval", made["eval"]
    )
    assert code == 0, err
    assert doc["predictions_sha256"] == by_task["predictions_sha256"] and doc["n"] == 16


@pytest.mark.parametrize("kind", ["out", "safetensors"])
@pytest.mark.parametrize("spelling", OLD)
def test_folders_with_either_old_spelling_are_read(made, kind, spelling, tmp_path) -> None:
    folder = tmp_path / "old"
    shutil.copytree(made[kind], folder)
    doc = json.loads((folder / "prefix.json").read_text())
    (folder / "prefix.json").write_text(json.dumps({**doc, "format": spelling}))
    want = predictions("--task", "sentiment", "--home", made["home"])
    assert predictions("--prefix", folder) == want
    home = tmp_path / "home"
    code, _, err = run("registry", "import", folder, "--home", home)
    assert code == 0, err
    assert predictions("--task", "sentiment", "--home", home) == want


def test_an_unknown_format_is_one_clear_error(made, tmp_path, capsys) -> None:
    from pipelines.cli import main

    folder = tmp_path / "future"
    shutil.copytree(made["safetensors"], folder)
    doc = json.loads((folder / "prefix.json").read_text())
    (folder / "prefix.json").write_text(json.dumps({**doc, "format": "continual.prefix/9"}))
    for argv in (["predict", "--prefix", str(folder), "x"], ["registry", "import", str(folder)]):
        assert main([*argv, "--home", str(tmp_path / "h")]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(folder / "prefix.json") in err[0]
        assert "'continual.prefix/9'" in err[0] and PREFIX_FORMAT in err[0]


@pytest.mark.parametrize("kind", ["out", "safetensors", "peft", "bare-peft", "bare-peft+backbone"])
def test_an_imported_prefix_is_served_by_task(made, kind, tmp_path, tiny_encoder) -> None:
    """`train --out` folders and bare PEFT adapters carry no training run; exports do. A bare
    adapter imported with `--backbone` keeps that backbone's record, so it serves by name."""
    bare = kind.startswith("bare-peft")
    folder = made["peft" if bare else kind]
    extra: list[str | Path] = []
    if bare:
        folder = tmp_path / "bare"
        shutil.copytree(made["peft"], folder)
        sidecar = json.loads((folder / "continual_export.json").read_text())
        (folder / "continual_export.json").write_text(
            json.dumps({"task": sidecar["task"], "head_file": sidecar["head_file"]})
        )
        adapter = json.loads((folder / "adapter_config.json").read_text())
        adapter["base_model_name_or_path"] = "nobody/unknown-model"  # not loadable offline
        (folder / "adapter_config.json").write_text(json.dumps(adapter))
        extra = ["--backbone-fingerprint", tiny_encoder.fingerprint]
        if kind == "bare-peft+backbone":
            extra = ["--backbone", tiny_encoder.source]
    want = predictions("--task", "sentiment", "--home", made["home"])
    home = tmp_path / "home"
    code, _, err = run("registry", "import", folder, "--home", home, *extra)
    assert code == 0, err
    if kind == "bare-peft+backbone":
        extra = []  # served without naming the backbone again
    if kind == "bare-peft":
        # a bare adapter names only its base model, which cannot be loaded here
        code, _, err = run("predict", "--task", "sentiment", "--home", home, *TEXTS)
        assert code == 2 and len(err) == 1 and "--backbone" in err[0]
        extra = ["--backbone", tiny_encoder.source]
    assert predictions("--task", "sentiment", "--home", home, *extra) == want
    code, doc, err = run(
        "evaluate", "--task", "sentiment", "--home", home, "--eval", made["eval"], *extra
    )
    assert code == 0, err and doc["n"] == 16
    code, doc, err = run(
        "registry", "similar", "sentiment", "--method", "prefix", "--home", home, *extra
    )
    assert code == 0, err
    assert doc["similar"] == []  # the only task: nothing to compare
    code, doc, err = run("registry", "similar", "sentiment", "--home", home, *extra)
    assert code == 2 and len(err) == 1
    assert "imported" in err[0] and "--method prefix" in err[0]
