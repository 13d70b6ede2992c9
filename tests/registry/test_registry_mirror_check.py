"""`registry check --mlflow`: MLflow's copy of each prefix read back against the registry, on a
real SQLite MLflow store. Every damage is found (naming the run), the registry's own check stays
clean, and repair rebuilds the mirror from the registry's verified files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from registry_testkit import register

from registry import Registry
from tasks.errors import ConfigError
from tests.integration.conftest import ROOT, child_env


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _copy(workspace: Path, run_id: str) -> Path:
    """MLflow's stored copy of the run's prefix file (the local artifact store)."""
    uri = _client(f"sqlite:///{workspace / 'mlflow.db'}").get_run(run_id).info.artifact_uri
    return Path(uri.removeprefix("file://")) / "prefix" / "prefix.safetensors"


@pytest.fixture
def mirrored(tmp_path: Path) -> tuple[Path, list[Any]]:
    ws = tmp_path / "ws"
    with Registry.open(ws) as reg:
        rows = [register(reg, "trec", seed=1), register(reg, "sst2", seed=2)]
    return ws, rows


def test_a_clean_mirror_passes_and_is_only_read_with_the_flag(mirrored) -> None:
    ws, rows = mirrored
    with Registry.open(ws) as reg:
        plain = reg.check()
        full = reg.check(mlflow=True)
    assert plain.ok and plain.mlflow_checked is None
    assert full.ok and full.mlflow_checked == 2 and full.mlflow == ()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_copy_is_found_and_repair_logs_the_registry_bytes_again(
    mirrored, damage: str
) -> None:
    ws, rows = mirrored
    copy = _copy(ws, rows[0].mlflow_run_id)
    raw = bytearray(copy.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 1
        copy.write_bytes(bytes(raw))
    elif damage == "truncate":
        copy.write_bytes(bytes(raw[:10]))
    else:
        copy.unlink()
    with Registry.open(ws) as reg:
        assert reg.check().ok  # the registry's own files are fine
        found = reg.check(mlflow=True)
        assert not found.ok and len(found.mlflow) == 1
        problem = found.mlflow[0]
        assert (problem.prefix_id, problem.run_id) == (rows[0].id, rows[0].mlflow_run_id)
        assert ("no prefix.safetensors" if damage == "delete" else "hashes to") in problem.problem
        fixed = reg.check(repair=True, mlflow=True)
        assert fixed.remirrored == (rows[0].id,)
        assert reg.check(mlflow=True).ok
        assert reg.show("trec").mlflow_run_id == rows[0].mlflow_run_id  # the same run
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == rows[0].sha256


def test_a_deleted_run_is_mirrored_anew_with_one_model_version(mirrored) -> None:
    ws, rows = mirrored
    client = _client(f"sqlite:///{ws / 'mlflow.db'}")
    client.delete_run(rows[1].mlflow_run_id)
    with Registry.open(ws) as reg:
        found = reg.check(mlflow=True)
        assert [p.problem for p in found.mlflow] == [f"run {rows[1].mlflow_run_id} is deleted in MLflow"]  # fmt: skip
        assert reg.check(repair=True, mlflow=True).remirrored == (rows[1].id,)
        new = reg.show("sst2").mlflow_run_id
        assert new and new != rows[1].mlflow_run_id
        assert all(e.mlflow_run_id == new for e in reg.history("sst2"))
        assert reg.check(mlflow=True).ok
    versions = client.search_model_versions("name='sst2'")
    assert [v.run_id for v in versions] == [new]


def test_a_new_empty_store_is_filled_by_repair(mirrored, tmp_path: Path) -> None:
    ws, rows = mirrored
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with Registry.open(ws, tracking_uri=other) as reg:
        found = reg.check(mlflow=True)
        assert [p.prefix_id for p in found.mlflow] == [r.id for r in rows]
        assert all("is gone in MLflow" in p.problem for p in found.mlflow)
        assert reg.check(repair=True, mlflow=True).remirrored == tuple(r.id for r in rows)
        assert reg.check(mlflow=True).ok
        ids = [reg.show(r.task).mlflow_run_id for r in rows]
    assert {_client(other).get_run(i).data.tags["continual.sha256"] for i in ids} == {
        r.sha256 for r in rows
    }


def test_an_unreadable_store_is_one_problem_and_left_alone(mirrored) -> None:
    """Run as a user would, in a fresh process: MLflow caches its stores per process, and one
    opened before the damage would still answer from its open connection."""
    ws, rows = mirrored
    db = ws / "mlflow.db"
    raw = bytearray(db.read_bytes())
    raw[:16] = b"not a database!\0"
    db.write_bytes(bytes(raw))
    for repair in ([], ["--repair"]):
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "registry", "check", "--mlflow", *repair,
             "--json", "--home", str(ws)],
            cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr[-2000:]
        found = json.loads(done.stdout)
        assert not found["ok"] and len(found["mlflow"]) == 1 and found["remirrored"] == []
        assert found["mlflow"][0]["prefix_id"] is None
        assert "cannot be read" in found["mlflow"][0]["problem"]
    with Registry.open(ws, tracking_uri="none") as reg:
        assert [reg.show(r.task).mlflow_run_id for r in rows] == [r.mlflow_run_id for r in rows]
    assert bytes(raw) == db.read_bytes()


def test_no_mlflow_store_is_a_clear_error(mirrored) -> None:
    ws, _ = mirrored
    with Registry.open(ws, tracking_uri="none") as reg, pytest.raises(ConfigError, match="--tracking-uri"):  # fmt: skip
        reg.check(mlflow=True)


def test_people_get_one_row_per_problem_and_the_verdict(mirrored, capsys) -> None:
    from pipelines.cli import main

    ws, rows = mirrored
    copy = _copy(ws, rows[1].mlflow_run_id)
    copy.write_bytes(copy.read_bytes()[:-1])
    assert main(["registry", "check", "--mlflow", "--home", str(ws)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "checked 2 files and 2 MLflow runs"
    problem = [x for x in out if x.startswith("mlflow")]
    assert len(problem) == 1 and "sst2 v1" in problem[0] and rows[1].mlflow_run_id in problem[0]
    assert out[-1] == "problems found: `--repair` fixes what it can"
    assert main(["registry", "check", "--mlflow", "--repair", "--home", str(ws)]) == 1
    assert "repair: 1 MLflow copies rebuilt" in capsys.readouterr().out
    assert main(["registry", "check", "--mlflow", "--home", str(ws)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ok"


def test_a_bad_copy_is_never_rebuilt_from_a_bad_registry_file(mirrored) -> None:
    ws, rows = mirrored
    copy = _copy(ws, rows[0].mlflow_run_id)
    copy.write_bytes(b"junk")
    own = ws / rows[0].artifact_path
    raw = bytearray(own.read_bytes())
    raw[-1] ^= 1
    own.write_bytes(bytes(raw))
    with Registry.open(ws) as reg:
        report = reg.check(repair=True, mlflow=True)
    assert report.remirrored == () and [p.prefix_id for p in report.mlflow] == [rows[0].id]
    assert "not repaired" in report.mlflow[0].problem and own.name in report.mlflow[0].problem
    assert copy.read_bytes() == b"junk"
