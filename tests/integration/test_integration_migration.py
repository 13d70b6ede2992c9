"""A workspace made by the previous version (one implicit stream, no stored data) opens after
the migration: its stream becomes `default`, its report is unchanged, and the next arrival
re-evaluates its tasks (reading their data once from what their runs recorded, then storing
it) with the predictions hashes of their own arrivals."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

from pipelines.cli import main
from registry import Registry, migrate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
QUIET = ["--json", "--quiet", "--tracking-uri", "none"]


def cli(*argv: str | Path) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + QUIET)
    assert code == 0, err.getvalue()[-3000:]
    return code, json.loads(out.getvalue())


@pytest.fixture
def old_workspace(tmp_path: Path) -> Path:
    home = tmp_path / "ws"
    with tarfile.open(FIXTURES / "workspace-6dedfc9.tar.xz") as tar:
        tar.extractall(home, filter="data")
    return home


def _tiny_encoder(folder: Path) -> Path:
    """The tiny random encoder the fixture's stream ran on (seeded: the same weights)."""
    spec = importlib.util.spec_from_file_location("_c", Path(__file__).parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf.build_tiny_encoder(folder)


@pytest.mark.integration
def test_an_old_workspace_migrates_reports_the_same_and_continues(
    old_workspace: Path, tmp_path: Path
) -> None:
    home = old_workspace
    before = json.loads((home / "report" / "report.json").read_text())
    with Registry.open(home, tracking_uri="none") as reg:
        assert migrate.current(reg.db.engine) == migrate.head()
        streams = {s.name: s for s in reg.streams.list()}
        assert list(streams) == ["default"] and streams["default"].arrivals == 2
        assert {a.stream for a in reg.streams.arrivals()} == {"default"}
        assert all(e.stream == "default" for t in reg.tasks() for e in reg.history(t.name))
        assert all(p.kind == "prefix" and p.data_sha256 is None for p in reg.prefixes())
    _, out = cli("report", "--home", home)
    after = json.loads(Path(out["report"]["json"]).read_text())
    for key in ("methods", "tasks", "task_agnostic"):
        assert after[key] == before[key], key
    assert (
        after["evidence"]["ok"]
        and after["evidence"]["predictions"] == (before["evidence"]["predictions"])
    )

    tiny = _tiny_encoder(tmp_path / "tiny-encoder")
    args = ["--steps", "12", "--lr", "1e-2", "--prefix-length", "4", "--eval-every", "6"]
    args += ["--batch-size", "8", "--max-train", "48", "--max-eval", "24", "--init", "random"]
    _, out = cli("learn", "--backbone", tiny, "--dataset", "vader_tweets", "--home", home, *args)
    assert out["position"] == 2 and out["stream"] == "default"
    doc = json.loads((home / "report" / "report.json").read_text())
    assert doc["evidence"]["ok"], doc["evidence"]["mismatches"]
    R = doc["methods"]["prefix"]["R"]
    assert [row[:2] for row in R[1:]] == [R[1][:2], R[1][:2]]  # the old columns unchanged
    assert doc["methods"]["sequential-ft"]["arrivals"] == 3  # the baseline continued too
    with Registry.open(home, tracking_uri="none") as reg:
        for task in ("sms_spam", "trec"):
            stored = reg.prefix(task).data_sha256
            assert stored is not None and reg.data.get(stored).spec.name == task
