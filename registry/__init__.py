"""The prefix registry: prefixes, lineage and evaluations in SQL, tensors as safetensors files,
runs mirrored to MLflow. Receives tensors and plain metadata; never imports `continual`.

Entry point: `Registry.open(workspace, url=None, tracking_uri=None)`.
"""

from __future__ import annotations

from pathlib import Path

from registry.api import Registry
from registry.records import (
    ArrivalRecord,
    ArtifactProblem,
    BackboneRecord,
    CheckReport,
    DatasetRecord,
    EvaluationRecord,
    ExportRecord,
    JobRecord,
    LineageEdge,
    PrefixRecord,
    RunRecord,
    StreamRecord,
    SyncReport,
    TaskEmbeddingRecord,
    TaskRecord,
    TaskView,
    TrainSummary,
)
from registry.tracking import MlflowTracker, NullTracker, Tracker, TrackingWarning, TrainingLog

__all__ = [
    "ArrivalRecord",
    "ArtifactProblem",
    "BackboneRecord",
    "CheckReport",
    "DatasetRecord",
    "EvaluationRecord",
    "ExportRecord",
    "JobRecord",
    "LineageEdge",
    "MlflowTracker",
    "NullTracker",
    "PrefixRecord",
    "Registry",
    "RunRecord",
    "StreamRecord",
    "SyncReport",
    "TaskEmbeddingRecord",
    "TaskRecord",
    "TaskView",
    "Tracker",
    "TrackingWarning",
    "TrainSummary",
    "TrainingLog",
    "upgrade",
]


def upgrade(workspace: Path | str, url: str | None = None) -> dict[str, str | None]:
    """Bring the registry database of `workspace` (or at `url`) to the newest schema."""
    from registry import migrate
    from registry.opening import open_database

    _, engine, (before, after) = open_database(workspace, url)
    engine.dispose()
    return {"before": before, "after": after, "head": migrate.head()}
