"""MLflow mirroring: a real SQLite-backed store in tmp_path, an unreachable server, catch-up."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest
from registry_testkit import register

from registry import NullTracker, Registry, TrackingWarning, TrainingLog
from registry.api import default_tracker
from registry.tracking import MlflowTracker


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_runs_metrics_and_registered_versions(workspace: Path, db_url: str | None) -> None:
    with Registry.open(workspace, url=db_url) as reg:
        reg.tasks()
        reg.check()
        assert not (workspace / "mlflow.db").exists()  # the MLflow store is created lazily
        v1 = register(reg, "trec", seed=1)
        v2 = register(reg, "trec", seed=2, new_version=True, lineage=[(v1.id, 1.0, "continue")])
        evaluation = reg.record_evaluation(
            task="trec", metric="accuracy", value=0.5, n=8, position=3
        )
        assert v1.mlflow_run_id and v2.mlflow_run_id and v1.mlflow_run_id != v2.mlflow_run_id
        assert reg.show("trec").mlflow_run_id == v2.mlflow_run_id
        assert evaluation.mlflow_run_id == v2.mlflow_run_id
        assert all(e.mlflow_run_id for e in reg.history("trec"))
    client = _client(f"sqlite:///{workspace / 'mlflow.db'}")
    run = client.get_run(v2.mlflow_run_id)
    assert run.data.params["task"] == "trec" and run.data.params["version"] == "2"
    assert run.data.params["prefix.length"] == "4" and run.data.params["seed"] == "2"
    assert run.data.tags["continual.backbone_fingerprint"] == v2.backbone_fingerprint
    assert run.data.tags["continual.task"] == "trec"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in losses] == [(0, 1.5), (1, 1.0), (2, 0.5)]
    accuracy = client.get_metric_history(run.info.run_id, "accuracy")
    assert sorted((m.step, m.value) for m in accuracy) == [(0, 0.75), (3, 0.5)]
    names = {f.path for f in client.list_artifacts(run.info.run_id, "prefix")}
    assert names == {"prefix/prefix.safetensors", "prefix/prefix_config.json", "prefix/run.json"}
    local = client.download_artifacts(
        run.info.run_id, "prefix/prefix.safetensors", str(workspace / "dl")
    )
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == v2.sha256
    assert str(workspace / "mlartifacts") in run.info.artifact_uri
    current = client.get_model_version_by_alias("trec", "current")
    assert current.run_id == v2.mlflow_run_id and current.tags["prefix_version"] == "2"
    assert len(client.search_model_versions("name='trec'")) == 2


def test_unreachable_mlflow_still_registers_then_sync_catches_up(
    workspace: Path, db_url: str | None
) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    with Registry.open(workspace, url=db_url, tracking_uri=down) as reg:
        with pytest.warns(TrackingWarning, match="sync-mlflow"):
            v1 = register(reg, "trec")
        with pytest.warns(TrackingWarning):
            v2 = register(reg, "trec", new_version=True)
        reg.record_evaluation(task="trec", metric="accuracy", value=0.25, n=8, position=1)
        assert v1.mlflow_run_id is None and v2.mlflow_run_id is None
        assert reg.show("trec").current.id == v2.id
        report = reg.sync_mlflow()  # still down: nothing synced, both reported
        assert report.synced == () and [pid for pid, _ in report.failed] == [v1.id, v2.id]
    up = f"sqlite:///{workspace / 'mlflow-up.db'}"
    with Registry.open(workspace, url=db_url, tracking_uri=up) as reg:
        report = reg.sync_mlflow()
        assert report.synced == (v1.id, v2.id) and report.failed == ()
        assert reg.sync_mlflow().synced == ()  # nothing left to do
        rows = {p.version: p.mlflow_run_id for p in reg.prefixes(task="trec")}
        assert all(rows.values())
        assert all(e.mlflow_run_id for e in reg.history("trec"))
    client = _client(up)
    assert client.get_model_version_by_alias("trec", "current").run_id == rows[2]
    accuracy = client.get_metric_history(rows[2], "accuracy")
    assert sorted((m.step, m.value) for m in accuracy) == [(0, 0.75), (1, 0.25)]


class _Flaky:
    """A tracker that fails until told otherwise, recording what it was sent."""

    uri = "fake://flaky"

    def __init__(self) -> None:
        self.up = False
        self.logs: list[TrainingLog] = []
        self.metrics: list[tuple[str, str, float, int]] = []

    def log_training(self, log: TrainingLog) -> str | None:
        if not self.up:
            raise RuntimeError("store is locked\nsecond line")
        self.logs.append(log)
        return f"run-{log.prefix_id}"

    def log_metric(self, run_id: str, key: str, value: float, step: int) -> None:
        if not self.up:
            raise RuntimeError("down")
        self.metrics.append((run_id, key, value, step))


def test_a_raising_tracker_only_warns(reg: Registry) -> None:
    flaky = _Flaky()
    reg.tracker = flaky
    with pytest.warns(TrackingWarning, match=r"\(RuntimeError: store is locked\);"):
        record = register(reg, "trec")
    assert record.mlflow_run_id is None and reg.prefix("trec").mlflow_run_id is None
    assert [p for p, _ in reg.sync_mlflow().failed] == [record.id]
    flaky.up = True
    assert reg.sync_mlflow().synced == (record.id,)
    log = flaky.logs[0]
    assert log.current and log.losses == (1.5, 1.0, 0.5) and ("accuracy", 0.75, 0) in log.metrics
    assert hashlib.sha256(log.files["prefix.safetensors"]).hexdigest() == record.sha256
    reg.record_evaluation(task="trec", metric="accuracy", value=0.5, n=8, position=4)
    assert flaky.metrics == [(f"run-{record.id}", "accuracy", 0.5, 4)]


def test_tracking_uri_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = default_tracker(tmp_path, None)
    assert isinstance(default, MlflowTracker)
    assert default.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracker(tmp_path, None).uri == "http://mlflow.example:5000"
    assert default_tracker(tmp_path, "sqlite:///elsewhere.db").uri == "sqlite:///elsewhere.db"
    assert isinstance(default_tracker(tmp_path, "none"), NullTracker)


def test_a_late_mirror_of_an_older_version_leaves_the_current_alias_on_the_newer(
    tmp_path: Path,
) -> None:
    """Two workers register v1 and v2 of a task; v2's mirror finishes first. v1's mirror was
    built while v1 was current (`current=True`), but the registry now says v2: the alias must
    stay on v2's model version (without `current_now` it would move back to v1)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(tracking_uri=uri, artifact_location=(tmp_path / "art").as_uri())
    registry_current = {"id": 2}

    def log(prefix_id: int) -> TrainingLog:
        return TrainingLog(
            task="race",
            version=prefix_id,
            prefix_id=prefix_id,
            current=True,
            params={"version": str(prefix_id)},
            tags={},
            losses=(1.0,),
            metrics=(),
            files={"prefix.safetensors": b"x"},
            current_now=lambda: registry_current["id"],
        )

    tracker.log_training(log(2))
    tracker.log_training(log(1))  # the late mirror of the older version
    client = _client(uri)
    alias = client.get_model_version_by_alias("race", "current")
    assert alias.tags["prefix_id"] == "2"
    registry_current["id"] = 3  # a version whose mirror has not run yet: left to that mirror
    tracker.log_training(log(4))
    assert client.get_model_version_by_alias("race", "current").tags["prefix_id"] == "2"
