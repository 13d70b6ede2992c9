"""`--reeval full|audit|proof`: which earlier tasks an arrival re-scores, the proof that carries
the others, and the report that marks each cell measured or carried.

The end-to-end tests run one stream of five tiny tasks under `full` and under `audit` (k=1) and
`proof`: evaluation is deterministic on the CPU, so every cell a proof carries must equal the
score `full` measured there, and every measured cell must equal it too."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipelines.arrival import reeval
from registry import Registry
from tasks.errors import ConfigError
from tests.pipelines.test_stream_run import run, stream_file, write_tasks

TASKS = tuple((f"t{i}", ("positive", "negative") if i % 2 else ("yes", "no"), i) for i in range(5))


# --- the choice of tasks, without a model ----------------------------------------------------


def simulate(T: int, k: int, seed: int = 0) -> dict[str, list[int]]:
    """Arrivals 0..T-1 under audit: the positions at which each task is measured."""
    measured: dict[str, list[int]] = {}
    for p in range(T):
        earlier = [f"task{i}" for i in range(p)]
        last = {t: measured[t][-1] for t in earlier}
        for t in reeval.rotation(earlier, last, k, seed):
            measured[t].append(p)
        measured[f"task{p}"] = [p]  # its own arrival
    return measured


@pytest.mark.parametrize(("T", "k"), [(60, 4), (37, 3), (10, 1), (25, 7)])
def test_every_task_is_rescored_at_least_every_ceil_T_over_k_arrivals(T: int, k: int) -> None:
    measured = simulate(T, k)
    bound = math.ceil(T / k)
    for task, positions in measured.items():
        gaps = [b - a for a, b in zip(positions, positions[1:] + [T])]
        assert max(gaps) <= bound, (task, positions, bound)
    # k tasks per arrival once there are k earlier tasks, never more
    per_arrival = [sum(p in ps[1:] for ps in measured.values()) for p in range(T)]
    assert per_arrival == [min(p, k) for p in range(T)]


def test_the_sample_is_a_function_of_the_registry_state_and_seed() -> None:
    earlier = [f"task{i}" for i in range(12)]
    last = dict.fromkeys(earlier, 3)
    a = reeval.rotation(earlier, last, 4, seed=0)
    assert a == reeval.rotation(earlier, last, 4, seed=0)  # a redone arrival picks the same
    assert len(a) == 4 and a == [t for t in earlier if t in a]  # stream order
    seeds = {tuple(reeval.rotation(earlier, last, 4, seed=s)) for s in range(8)}
    assert len(seeds) > 1  # ties are broken by the seed, not by name
    last["task9"] = 1  # the one measured longest ago comes first
    assert "task9" in reeval.rotation(earlier, last, 1, seed=0)


def test_auto_is_full_for_twenty_tasks_then_audit() -> None:
    assert [reeval.mode_for("auto", p) for p in (0, 19, 20, 999)] == [
        "full",
        "full",
        "audit",
        "audit",
    ]
    assert reeval.mode_for("proof", 0) == "proof" and reeval.mode_for("full", 500) == "full"


@pytest.mark.parametrize(
    ("mode", "k", "message"),
    [("sometimes", 4, "reeval must be one of auto, full"), ("audit", 0, "audit_k must be")],
)
def test_bad_settings_are_one_clear_line(mode: str, k: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reeval.check_reeval(mode, k, "stream.yaml: defaults")


# --- end to end on the tiny encoder ------------------------------------------------------------


def _stream(tmp: Path, tiny_encoder_dir: Path, sentiment, mode: str, k: int = 1) -> dict:
    data = tmp / "data"
    write_tasks(data, sentiment, TASKS)
    path = stream_file(data, tiny_encoder_dir, "[]", TASKS, reeval=mode, audit_k=k)
    code, out, err = run("stream", "run", path, "--home", tmp / "home")
    assert code == 0, err
    return json.loads((tmp / "home" / "report" / "report.json").read_text())


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, tiny_encoder_dir, sentiment) -> dict:
    return _stream(tmp_path_factory.mktemp("full"), tiny_encoder_dir, sentiment, "full")


@pytest.mark.parametrize("mode", ["audit", "proof"])
def test_carried_cells_equal_what_full_measures(
    mode: str, full_report: dict, tmp_path: Path, tiny_encoder_dir: Path, sentiment
) -> None:
    doc = _stream(tmp_path, tiny_encoder_dir, sentiment, mode, k=1)
    full, got = full_report["methods"]["prefix"], doc["methods"]["prefix"]
    assert "carried" not in full  # the report of a full stream is as before
    assert got["R"] == full["R"]  # every cell, carried or measured, is the measured value
    carried = got["carried"]
    T = len(TASKS)
    assert not any(carried[i][i] for i in range(T))  # a task's own arrival is measured
    with Registry.open(tmp_path / "home", tracking_uri="none") as reg:
        arrivals = reg.streams.arrivals("prefix", "default")
        at = {(e.task, e.position) for e in reg.streams.evaluations("default")}
    for i, a in enumerate(arrivals):
        assert a.reeval is not None and a.reeval["mode"] == mode
        assert a.reeval["modules"] == i  # every earlier module verified
        want = min(i, 1) if mode == "audit" else 0
        assert len(a.reeval["measured"]) == want
        for j in range(i):
            was_measured = (TASKS[j][0], i) in at
            assert was_measured == (TASKS[j][0] in a.reeval["measured"]) == (not carried[i][j])
    if mode == "proof":
        assert all(carried[i][j] for i in range(T) for j in range(i))
    assert got["acc"] == full["acc"] and got["bwt"] == full["bwt"]
    assert doc["evidence"]["ok"]
    md = (tmp_path / "home" / "report" / "report.md").read_text()
    assert "≡: carried by proof" in md and "≡" in md.split("### prefix")[1].split("\n\n")[1]
    # routing is measured on the sample only, among all tasks so far
    last = doc["task_agnostic"]["per_arrival"][-1]
    assert last["recorded"] and last["tasks"] == T
    assert last["evaluated"] == (2 if mode == "audit" else 1)


def test_a_flipped_byte_in_an_earlier_module_fails_the_arrival(
    tmp_path: Path, tiny_encoder_dir: Path, sentiment
) -> None:
    data = tmp_path / "data"
    write_tasks(data, sentiment, TASKS[:3])
    first = stream_file(data, tiny_encoder_dir, "[]", TASKS[:2], reeval="proof")
    home = tmp_path / "home"
    assert run("stream", "run", first, "--home", home)[0] == 0
    with Registry.open(home, tracking_uri="none") as reg:
        record = reg.show("t0").current
    path = home / record.artifact_path
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    code, _, err = run(
        "learn",
        "--backbone",
        tiny_encoder_dir,
        "--name",
        "t2",
        "--train",
        data / "t2-train.jsonl",
        "--eval",
        data / "t2-eval.jsonl",
        "--steps",
        "4",
        "--prefix-length",
        "4",
        "--reeval",
        "proof",
        "--init",
        "random",  # (a similar-task start would read t0's file, and refuse, before the proof)
        "--home",
        home,
    )
    assert code != 0, err
    assert any(
        "task t0" in line and "sha256" in line and "registry check" in line for line in err
    ), err
    with Registry.open(home, tracking_uri="none") as reg:
        done = [a for a in reg.streams.arrivals("prefix", "default") if a.status == "done"]
    assert [a.task for a in done] == ["t0", "t1"]  # the arrival of t2 did not finish
