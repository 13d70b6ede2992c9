"""One flipped byte in a stored prefix file: `registry check` exits non-zero and names it, and
`evaluate --task` refuses to load it with one `error:` line naming the file and the sha256
mismatch. Both run as child processes, so exit codes and stderr are the real ones."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

TASK = "sentiment"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_last_byte(path: Path) -> None:
    """Flip one bit in the tensor data (the last byte), leaving the safetensors header valid."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory, cli, train_argv, task_files, tiny_encoder_dir) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("corruption") / "home"
    opts = ("--steps", "5", "--tracking-uri", "none")
    trained = cli(*train_argv(tiny_encoder_dir, task_files, TASK, home, *opts))
    assert trained.rc == 0, trained.err
    path = Path(trained.out["prefix_path"])
    flip_last_byte(path)
    return {"home": home, "path": path, "expected": trained.out["prefix_sha256"]}


def test_registry_check_exits_nonzero_and_reports_the_file(corrupted, run_child) -> None:
    home, path = corrupted["home"], corrupted["path"]
    r = run_child("registry", "check", "--json", "--home", home, "--tracking-uri", "none")
    assert r.rc == 1, r.err
    assert r.out["ok"] is False and r.out["missing"] == [] and r.out["orphans"] == []
    [problem] = r.out["corrupt"]
    assert problem["task"] == TASK and problem["version"] == 1 and problem["kind"] == "prefix"
    assert home / problem["path"] == path
    assert problem["expected_sha256"] == corrupted["expected"]
    assert problem["actual_sha256"] == sha256(path) != corrupted["expected"]


def test_evaluate_refuses_the_corrupt_prefix_in_one_line(corrupted, run_child, task_files) -> None:
    home, path = corrupted["home"], corrupted["path"]
    r = run_child(
        "evaluate", "--task", TASK, "--eval", task_files[f"{TASK}.eval"], "--home", home,
        "--tracking-uri", "none",
    )  # fmt: skip
    assert r.rc == 2
    assert r.stdout == ""
    assert len(r.err) == 1, r.err
    line = r.err[0]
    assert line.startswith("error: ") and "Traceback" not in line
    assert str(path) in line and "sha256" in line
    assert corrupted["expected"] in line and sha256(path) in line


def test_after_repair_the_prefix_is_marked_broken_and_still_refused(
    corrupted, cli, task_files, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # a copy: repair changes the workspace the other tests read
    shutil.copytree(corrupted["home"], home)
    repaired = cli("registry", "check", "--repair", "--json", "--home", home)
    assert repaired.rc == 1 and repaired.out["marked_broken"] != []
    # Known-broken rows are no longer new problems; the file is kept (it is still referenced).
    again = cli("registry", "check", "--json", "--home", home)
    assert again.rc == 0 and again.out["ok"] is True
    assert (home / corrupted["path"].relative_to(corrupted["home"])).is_file()
    r = cli("evaluate", "--task", TASK, "--eval", task_files[f"{TASK}.eval"], "--home", home)
    assert r.rc == 2 and len(r.err) == 1
    assert r.err[0].startswith("error: prefix sentiment v1") and "broken" in r.err[0]
