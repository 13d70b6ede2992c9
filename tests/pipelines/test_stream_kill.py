"""A `stream run` killed with SIGKILL in the middle of an arrival, then run again, ends with the
same registry rows (no duplicates) and the same accuracy matrices as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from registry import Registry

ROOT = Path(__file__).resolve().parents[2]
TASKS = (("sentiment", ("positive", "negative"), 1), ("opinion", ("yes", "no"), 3))
TASKS += (("mood", ("bad", "good"), 5),)
METHODS = ("prefix", "sequential-ft", "shared-prefix")
QUIET = ["--quiet", "--json", "--tracking-uri", "none"]


def write_stream(folder: Path, backbone: Path, sentiment) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrivals = []
    for task, labels, seed in TASKS:
        for split, n in (("train", 48), ("eval", 24)):
            rows = sentiment(n, seed=seed + (split == "eval") * 100, labels=labels)
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (folder / f"{task}-{split}.jsonl").write_text(text, encoding="utf-8")
        arrivals.append(f"  - {{name: {task}, train: {task}-train.jsonl, eval: {task}-eval.jsonl}}")
    path = folder / "stream.yaml"
    path.write_text(
        f"backbone: {backbone}\n"
        "defaults: {steps: 24, lr: 1.0e-2, prefix_length: 4, eval_every: 8, batch_size: 8}\n"
        "baselines: [sequential-ft, shared-prefix]\narrivals:\n" + "\n".join(arrivals) + "\n",
        encoding="utf-8",
    )
    return path


def run_here(path: Path, home: Path) -> int:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(["stream", "run", str(path), "--home", str(home), *QUIET])


def run_and_kill(path: Path, home: Path, trigger: str) -> list[str]:
    """`continual stream run` as a child process, SIGKILLed as soon as it prints `trigger`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "stream", "run", str(path), "--home", str(home)]
        + QUIET,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    deadline = time.monotonic() + 240
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line.rstrip())
            if line.startswith(trigger):
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "the child never reached the trigger"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {trigger!r}:\n" + "\n".join(seen)
    return seen


def snapshot(home: Path) -> tuple[list, list, dict]:
    with Registry.open(home, tracking_uri="none") as reg:
        evals = sorted(
            (e.task, e.method, e.position, e.value, e.predictions_sha256)
            for t in reg.tasks()
            for e in reg.history(t.name)
        )
        arrivals = sorted((a.method, a.position, a.task, a.status) for a in reg.streams.arrivals())
    doc = json.loads((home / "report" / "report.json").read_text())
    return evals, arrivals, {m: doc["methods"][m]["R"] for m in METHODS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_encoder_dir, sentiment):
    """The same stream, uninterrupted."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    path = write_stream(folder / "data", tiny_encoder_dir, sentiment)
    assert run_here(path, folder / "home") == 0
    return snapshot(folder / "home")


@pytest.mark.parametrize(
    "trigger",
    [
        "[default 2] opinion · prefix · train",  # before registration: nothing of it is stored yet
        "[default 2] opinion · prefix · re-evaluate",  # registered, its arrival row still open
        "[default 2] opinion · sequential-ft · train",  # the prefix done, a baseline mid-training
        "[default 3] mood · shared-prefix · checkpoint",  # weights saved or not, nothing recorded
    ],
)
def test_a_killed_stream_finishes_as_if_never_killed(
    trigger, reference, tmp_path, tiny_encoder_dir, sentiment
) -> None:
    path = write_stream(tmp_path / "data", tiny_encoder_dir, sentiment)
    home = tmp_path / "home"
    run_and_kill(path, home, trigger)
    with Registry.open(home, tracking_uri="none") as reg:
        assert len(reg.streams.arrivals()) < 9 or any(
            a.status != "done" for a in reg.streams.arrivals()
        )
    assert run_here(path, home) == 0
    evals, arrivals, R = snapshot(home)
    ref_evals, ref_arrivals, ref_R = reference
    assert arrivals == ref_arrivals  # one arrival per method and position, all done
    assert evals == ref_evals  # no duplicate rows, the same scores and hashes
    assert R == ref_R
    assert all(len(set(row)) == 1 for row in _columns(R["prefix"]))


def _columns(R: list[list[float | None]]) -> list[list[float]]:
    return [[R[i][j] for i in range(j, len(R))] for j in range(len(R))]
