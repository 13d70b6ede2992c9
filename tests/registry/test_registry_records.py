"""Every record the registry hands out round-trips to_dict -> JSON -> from_dict."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from registry.records import (
    ArrivalRecord,
    ArtifactProblem,
    BackboneRecord,
    CheckReport,
    EvaluationRecord,
    ExportRecord,
    LineageEdge,
    PrefixRecord,
    Record,
    RunRecord,
    SyncReport,
    TaskEmbeddingRecord,
    TaskRecord,
    TaskView,
    TrainSummary,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone.utc)
TASK = TaskRecord(
    id=1,
    name="trec",
    kind="classification",
    spec={"name": "trec", "labels": ["a", "b"]},
    data_fingerprint="d" * 64,
    description="questions",
    created_at=NOW,
)
EDGE = LineageEdge(
    prefix_id=2,
    task="trec",
    version=2,
    source_prefix_id=1,
    source_task="sst2",
    source_version=1,
    weight=0.5,
    method="nearest",
    depth=2,
)
TRAIN = TrainSummary(steps=3, seconds=1.5, final_loss=None, n_trainable=100)
PREFIX = PrefixRecord(
    id=2,
    task="trec",
    version=2,
    is_current=True,
    status="ok",
    backbone_name="tiny",
    backbone_fingerprint="f" * 64,
    config={"length": 4, "positions": "shifted"},
    artifact_path="artifacts/ab/ab.safetensors",
    sha256="ab" * 32,
    n_bytes=10,
    n_stored=64,
    train=TRAIN,
    run_id=None,
    mlflow_run_id="r1",
    created_at=NOW,
    optimizer_path=None,
    optimizer_sha256=None,
    lineage=(EDGE,),
)
EVAL = EvaluationRecord(
    id=1,
    task="trec",
    prefix_id=None,
    prefix_version=None,
    position=None,
    method="replay",
    metric="accuracy",
    value=0.5,
    n=8,
    predictions_sha256=None,
    mlflow_run_id=None,
    created_at=NOW,
)
PROBLEM = ArtifactProblem(
    prefix_id=1,
    task="trec",
    version=1,
    kind="prefix",
    path="artifacts/x",
    expected_sha256="a" * 64,
    actual_sha256=None,
)

RECORDS: list[Record] = [
    BackboneRecord(
        name="tiny",
        source="test",
        fingerprint="f" * 64,
        n_params=3,
        config={"layers": 2},
        id=1,
        created_at=NOW,
    ),
    TASK,
    RunRecord(
        id=1,
        seed=0,
        config={"lr": 0.1, "nested": {"a": [1, 2]}},
        packages={"torch": "2.13"},
        backbone_fingerprint="f" * 64,
        created_at=NOW,
    ),
    TRAIN,
    EDGE,
    PREFIX,
    EVAL,
    TaskView(
        task=TASK, current=PREFIX, versions=2, metrics=(EVAL,), lineage=(EDGE,), mlflow_run_id="r1"
    ),
    TaskView(task=TASK, current=None, versions=0, metrics=(), lineage=(), mlflow_run_id=None),
    TaskEmbeddingRecord(
        id=1,
        task="trec",
        method="mean",
        dim=3,
        vector=np.array([0.5, -1.0, 2.0], dtype=np.float32),
        created_at=NOW,
    ),
    ArrivalRecord(
        id=1,
        position=0,
        task="trec",
        method="prefix",
        status="done",
        started_at=NOW,
        finished_at=None,
    ),
    PROBLEM,
    CheckReport(
        ok=False,
        checked_files=2,
        missing=(PROBLEM,),
        corrupt=(),
        orphans=("a",),
        recent_orphans=(),
        repaired=True,
        removed=("a",),
        marked_broken=(1,),
        dropped_optimizer=(),
        restored=(),
    ),
    SyncReport(tracking="sqlite:///x", synced=(1, 2), failed=((3, "down"),)),
    ExportRecord(
        task="trec",
        version=2,
        prefix_id=2,
        format="peft",
        out="/tmp/x",
        files=("adapter_config.json",),
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(record: Record) -> None:
    d = json.loads(json.dumps(record.to_dict()))
    assert type(record).from_dict(d) == record


def test_records_are_frozen() -> None:
    with pytest.raises(AttributeError):
        TASK.name = "other"  # type: ignore[misc]
