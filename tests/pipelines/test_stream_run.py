"""Task streams end to end on the tiny random encoder and decoder: arrivals, re-evaluation,
baselines, the stream continued by `learn` in another process, reruns that change nothing, and
local JSONL files behaving exactly like a built-in dataset."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.cli import main
from registry import Registry

ROOT = Path(__file__).resolve().parents[2]
TASKS = (("sentiment", ("positive", "negative"), 1), ("opinion", ("yes", "no"), 3))
TASKS += (("mood", ("bad", "good"), 5),)
FAST = {"steps": 16, "lr": 1.0e-2, "prefix_length": 4, "eval_every": 8, "batch_size": 8}


def run(*argv: str | Path) -> tuple[int, dict, list[str]]:
    """`continual ARGV --json --quiet` in this process: (exit code, stdout JSON, stderr lines)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + ["--json", "--quiet", "--tracking-uri", "none"])
    return code, json.loads(out.getvalue() or "{}"), err.getvalue().splitlines()


def child(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *map(str, argv), "--json", "--quiet"]
        + ["--tracking-uri", "none"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_tasks(folder: Path, sentiment, tasks=TASKS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for task, labels, seed in tasks:
        for split, n in (("train", 48), ("eval", 24)):
            rows = sentiment(n, seed=seed + (split == "eval") * 100, labels=labels)
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (folder / f"{task}-{split}.jsonl").write_text(text, encoding="utf-8")


def stream_file(folder: Path, backbone: Path, baselines: str, tasks=TASKS, **extra) -> Path:
    arrivals = "\n".join(
        f"  - {{name: {t}, train: {t}-train.jsonl, eval: {t}-eval.jsonl}}" for t, _, _ in tasks
    )
    defaults = json.dumps({**FAST, **extra})
    path = folder / "stream.yaml"
    path.write_text(
        f"backbone: {backbone}\ndefaults: {defaults}\nbaselines: {baselines}\n"
        f"arrivals:\n{arrivals}\n",
        encoding="utf-8",
    )
    return path


def rows(home: Path) -> tuple[list[tuple], list[tuple]]:
    """Every evaluation as (task, method, position) and every arrival as (method, position)."""
    with Registry.open(home, tracking_uri="none") as reg:
        evals = [(e.task, e.method, e.position) for t in reg.tasks() for e in reg.history(t.name)]
        arrivals = [(a.method, a.position, a.status) for a in reg.streams.arrivals()]
    return sorted(evals), sorted(arrivals)


def report(home: Path) -> dict:
    return json.loads((home / "report" / "report.json").read_text())


@pytest.fixture(scope="module")
def streamed(tmp_path_factory, tiny_encoder_dir, sentiment):
    """A three-task stream with both baselines, run once in this process."""
    folder = tmp_path_factory.mktemp("stream")
    write_tasks(folder / "data", sentiment)
    path = stream_file(folder / "data", tiny_encoder_dir, "[sequential-ft, shared-prefix]")
    home = folder / "home"
    code, out, err = run("stream", "run", path, "--home", home)
    assert code == 0, err
    return home, path, out, err


def test_every_arrival_is_recorded_per_method(streamed) -> None:
    home, _, out, _ = streamed
    assert [a["task"] for a in out["arrivals"]] == ["sentiment", "opinion", "mood"]
    evals, arrivals = rows(home)
    methods = ("prefix", "sequential-ft", "shared-prefix")
    assert arrivals == sorted((m, p, "done") for m in methods for p in range(3))
    for m in methods:  # task j scored at every position i >= j, exactly once
        scored = [(t, p) for t, mm, p in evals if mm == m]
        names = [t for t, _, _ in TASKS]
        assert sorted(scored) == sorted((names[j], i) for j in range(3) for i in range(j, 3))
        for which in ("init", "random"):  # the starting points, at each task's own arrival
            starts = [(t, p) for t, mm, p in evals if mm == f"{m}/untrained-{which}"]
            assert sorted(starts) == sorted((names[j], j) for j in range(3))


def test_prefix_rows_are_constant_down_every_column(streamed) -> None:
    home, *_ = streamed
    doc = report(home)
    R = doc["methods"]["prefix"]["R"]
    for j in range(3):
        assert len({R[i][j] for i in range(j, 3)}) == 1
        assert all(R[i][j] is None for i in range(j))
    m = doc["methods"]["prefix"]
    assert m["bwt"] == 0.0 and m["forgetting_max"] == 0.0 and m["forgetting_last"] == 0.0
    # Forward transfer compares the untrained `auto` start (words, or a mix of earlier prefixes)
    # with a random one, over the tasks after the first (GEM).
    gains = [a - b for a, b in zip(m["untrained_init"][1:], m["untrained_random"][1:])]
    assert m["fwt"] == pytest.approx(sum(gains) / len(gains))


def test_every_reevaluation_reproduces_its_predictions(streamed) -> None:
    home, *_ = streamed
    ev = report(home)["evidence"]
    assert ev["ok"] and not ev["mismatches"]
    assert len(ev["predictions"]) == 6 and all(p["equal"] for p in ev["predictions"])
    assert [f["equal"] for f in ev["backbone"]] == [True, True, True]


def test_sequential_ft_trains_a_copy_never_the_frozen_backbone(streamed, tiny_encoder) -> None:
    home, *_ = streamed
    from safetensors.torch import load_file

    state = home / "baselines" / "sequential-ft"
    folder = state / (state / "CURRENT").read_text().strip()
    saved = load_file(str(folder / "model.safetensors"))
    frozen = tiny_encoder.model.state_dict()
    changed = [k for k, v in saved.items() if not (v == frozen[k]).all()]
    assert changed  # the copy moved
    doc = report(home)
    assert doc["backbone"]["fingerprint"] == tiny_encoder.fingerprint  # the original did not
    assert json.loads((folder / "state.json").read_text())["tasks"] == [
        "sentiment",
        "opinion",
        "mood",
    ]


def test_a_rerun_skips_every_arrival_and_adds_no_row(streamed) -> None:
    home, path, _, _ = streamed
    before = rows(home)
    code, out, err = run("stream", "run", path, "--home", home)
    assert code == 0, err
    assert [a["status"] for a in out["arrivals"]] == ["skipped"] * 3
    assert rows(home) == before


def test_learn_refuses_a_task_that_already_arrived(streamed, tiny_encoder_dir) -> None:
    home, path, _, _ = streamed
    data = path.parent
    code, out, err = run(
        "learn",
        "--backbone",
        tiny_encoder_dir,
        "--name",
        "opinion",
        "--train",
        data / "opinion-train.jsonl",
        "--home",
        home,
    )
    assert code == 2 and out["type"] == "ConfigError"
    assert "already arrived at position 1" in out["error"]


def test_learn_in_another_process_continues_the_stream(
    streamed, tiny_encoder_dir, sentiment, tmp_path
) -> None:
    home, path, _, _ = streamed
    write_tasks(tmp_path, sentiment, tasks=(("later", ("up", "down"), 7),))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    before = report(home)["methods"]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    done = child(
        "learn",
        "--backbone",
        tiny_encoder_dir,
        "--name",
        "later",
        "--train",
        "../later-train.jsonl",  # relative to where the command runs
        "--eval",
        "../later-eval.jsonl",
        "--home",
        home,
        *flags,
        cwd=elsewhere,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["position"] == 3 and set(out) >= {"prefix", "sequential-ft", "shared-prefix"}
    assert "[default 4] later · prefix · re-evaluate 3 earlier task(s)" in done.stderr
    after = report(home)["methods"]
    for method in ("prefix", "sequential-ft", "shared-prefix"):  # baselines continue on their own
        assert after[method]["arrivals"] == 4 and len(after[method]["R"]) == 4
        assert after[method]["R"][:3] == [row + [None] for row in before[method]["R"]]
    R = after["prefix"]["R"]
    assert R[3][:3] == R[2][:3] and after["prefix"]["bwt"] == 0.0


def test_the_decoder_runs_text_to_text_baselines(tmp_path, tiny_decoder_dir, sentiment) -> None:
    tasks = TASKS[:2]
    write_tasks(tmp_path, sentiment, tasks=tasks)
    path = stream_file(
        tmp_path, tiny_decoder_dir, "[sequential-ft, shared-prefix]", tasks=tasks, steps=8
    )
    code, out, err = run("stream", "run", path, "--home", tmp_path / "home")
    assert code == 0, err
    doc = report(tmp_path / "home")
    assert doc["evidence"]["ok"] and doc["methods"]["prefix"]["bwt"] == 0.0
    for method in ("sequential-ft", "shared-prefix"):
        R = doc["methods"][method]["R"]
        assert all(isinstance(x, float) for x in (R[0][0], R[1][0], R[1][1]))
    assert not list((tmp_path / "home" / "baselines" / "sequential-ft").glob("*/heads.*"))


# --- local files behave exactly like a built-in dataset -----------------------------------------


@pytest.fixture(scope="module")
def tiny_catalog_task(sentiment):
    """A built-in dataset whose rows come from the tiny sentiment maker (no wheel is read)."""
    from tasks import catalog
    from tasks.assets import WheelAsset
    from tasks.spec import Example

    train = tuple(Example(r["text"], r["label"]) for r in sentiment(48, seed=11))
    evals = tuple(Example(r["text"], r["label"]) for r in sentiment(24, seed=111))
    name = "tiny_sentiment"
    registered = name not in catalog.names()
    if registered:
        catalog.register(
            catalog.CatalogEntry(
                name=name,
                kind="classification",
                description="Tiny sentiment for tests.",
                labels=("negative", "positive"),
                licence="test data",
                provenance="tests/conftest.py sentiment_rows",
                asset=WheelAsset("none", "0", "0" * 64),
                loader=lambda asset: catalog.RawSplits(train=train, eval=evals),
            )
        )
    yield name, train, evals
    if registered:  # the catalog is process-wide: leave it as other tests expect it
        catalog.base._ENTRIES.pop(name, None)


def test_jsonl_files_arrive_exactly_like_a_builtin_dataset(
    tiny_catalog_task, tiny_encoder_dir, tmp_path
) -> None:
    name, train, evals = tiny_catalog_task
    for split, rows_ in (("train", train), ("eval", evals)):
        lines = "".join(json.dumps({"text": e.text, "label": e.target}) + "\n" for e in rows_)
        (tmp_path / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    defaults = json.dumps(FAST)
    (tmp_path / "catalog.yaml").write_text(
        f"backbone: {tiny_encoder_dir}\ndefaults: {defaults}\nbaselines: [sequential-ft]\n"
        f"arrivals:\n  - dataset: {name}\n"
    )
    (tmp_path / "files.yaml").write_text(
        f"backbone: {tiny_encoder_dir}\ndefaults: {defaults}\nbaselines: [sequential-ft]\n"
        f"arrivals:\n  - {{name: {name}, train: train.jsonl, eval: eval.jsonl, "
        "description: Tiny sentiment for tests.}\n"
    )
    docs = {}
    for how in ("catalog", "files"):
        code, _, err = run("stream", "run", tmp_path / f"{how}.yaml", "--home", tmp_path / how)
        assert code == 0, err
        docs[how] = report(tmp_path / how)
    a, b = docs["catalog"], docs["files"]
    for method in ("prefix", "sequential-ft"):
        assert a["methods"][method]["R"] == b["methods"][method]["R"]
    assert a["evidence"]["predictions"] == b["evidence"]["predictions"]
    fp = a["backbone"]["fingerprint"]
    with Registry.open(tmp_path / "catalog", tracking_uri="none") as ra:
        with Registry.open(tmp_path / "files", tracking_uri="none") as rb:
            spec_a, spec_b = ra.show(name).task, rb.show(name).task
            tensors_a, _ = ra.load_prefix(name, fp)
            tensors_b, _ = rb.load_prefix(name, fp)
    assert spec_a.data_fingerprint == spec_b.data_fingerprint
    assert tensors_a.keys() == tensors_b.keys()
    assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)  # the same prefix
    assert spec_a.spec["source"] == f"catalog:{name}" and spec_b.spec["source"].startswith("files:")


def test_reevaluation_reads_the_registry_not_the_source_files(
    tiny_encoder_dir, sentiment, tmp_path
) -> None:
    """The source files of an arrived task are edited, then moved away: the next arrival
    re-evaluates it from the data stored in the registry, with an unchanged predictions hash."""
    write_tasks(tmp_path, sentiment, tasks=TASKS[:2])
    path = stream_file(tmp_path, tiny_encoder_dir, "[]", tasks=TASKS[:1])
    assert run("stream", "run", path, "--home", tmp_path / "home")[0] == 0
    eval_file = tmp_path / "sentiment-eval.jsonl"
    eval_file.write_text(eval_file.read_text().replace("positive", "negative", 1))
    gone = tmp_path / "moved-away"
    gone.mkdir()
    for f in ("sentiment-train.jsonl", "sentiment-eval.jsonl"):
        (tmp_path / f).rename(gone / f)
    code, out, err = run(
        "learn",
        "--backbone",
        tiny_encoder_dir,
        "--name",
        "opinion",
        "--train",
        tmp_path / "opinion-train.jsonl",
        "--home",
        tmp_path / "home",
        "--steps",
        "4",
    )
    assert code == 0, err
    doc = report(tmp_path / "home")
    assert doc["evidence"]["ok"] and not doc["evidence"]["mismatches"]
    rows_of = [r for r in doc["evidence"]["predictions"] if r["task"] == "sentiment"]
    assert [r["position"] for r in rows_of] == [0, 1]
    assert rows_of[1]["sha256"] == rows_of[0]["sha256"] == rows_of[0]["arrival_sha256"]
    with Registry.open(tmp_path / "home", tracking_uri="none") as reg:
        stored = reg.prefix("sentiment").data_sha256
        assert stored is not None and reg.data.get(stored).spec.name == "sentiment"


def test_task_agnostic_section_routes_every_input(streamed) -> None:
    home, *_ = streamed
    doc = report(home)
    ta = doc["task_agnostic"]
    T = doc["methods"]["prefix"]["arrivals"]  # earlier tests in this module may add arrivals
    assert [a["position"] for a in ta["per_arrival"]] == list(range(T)) and T >= 3
    assert all(a["recorded"] and a["coverage"] == 1.0 for a in ta["per_arrival"])
    sizes = [t["n_eval"] for t in doc["tasks"]]
    assert [a["n"] for a in ta["per_arrival"]] == [sum(sizes[: i + 1]) for i in range(T)]
    first = ta["per_arrival"][0]  # one task: everything routes to it, the answers are its own
    assert first["routing_accuracy"] == 1.0
    assert first["end_to_end"] == first["task_given"] == doc["methods"]["prefix"]["R"][0][0]
    for a in ta["per_arrival"]:
        assert 0.0 <= a["routing_accuracy"] <= 1.0 and 0.0 <= a["end_to_end"] <= 1.0
    evals, _ = rows(home)
    for method in ("prefix/routed", "prefix/routing"):
        scored = sorted((t, p) for t, m, p in evals if m == method)
        names = [t["task"] for t in doc["tasks"]]
        assert scored == sorted((names[j], i) for j in range(T) for i in range(j, T))
    md = (home / "report" / "report.md").read_text()
    assert "## Task-agnostic" in md and "routing accuracy" in md
