"""Frozen records: what the registry hands out. ORM rows never leave `registry/`.

Every record round-trips `to_dict -> from_dict` through plain JSON types (datetimes as ISO 8601
strings, tuples as lists, nested records as dicts), so the CLI can print any of them as JSON.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

import numpy as np

R = TypeVar("R", bound="Record")


class Record:
    """Mixin giving a frozen dataclass `to_dict` and `from_dict`."""

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        hints = Record._hints.get(cls) or Record._hints.setdefault(cls, get_type_hints(cls))
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: _decode(hints[k], v) for k, v in d.items() if k in names})


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _decode(inner, value)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(value)
    if tp is datetime:
        return datetime.fromisoformat(value)
    if tp is np.ndarray:
        array = np.asarray(value, dtype=np.float32)
        array.setflags(write=False)
        return array
    if tp is float and isinstance(value, int):
        return float(value)
    return value


@dataclass(frozen=True)
class BackboneRecord(Record):
    """A frozen pretrained model; `fingerprint` is the hash of its weights."""

    name: str
    source: str
    fingerprint: str
    n_params: int
    config: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class TaskRecord(Record):
    """A task known to the registry; `spec` is `TaskSpec.to_dict()` of its latest registration."""

    id: int
    name: str
    kind: str
    spec: dict[str, Any]
    data_fingerprint: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class RunRecord(Record):
    """What reproduces a training run."""

    id: int
    seed: int
    config: dict[str, Any]
    packages: dict[str, Any]
    backbone_fingerprint: str
    created_at: datetime


@dataclass(frozen=True)
class TrainSummary(Record):
    """How a prefix was trained; `losses` (one per step) are kept in the database, not here."""

    steps: int
    seconds: float
    final_loss: float | None
    n_trainable: int


@dataclass(frozen=True)
class LineageEdge(Record):
    """Prefix `prefix_id` (task `task` v`version`) was initialised from `source_prefix_id`.

    `depth` is 1 for a direct source, 2 for a source's source, and so on.
    """

    prefix_id: int
    task: str
    version: int
    source_prefix_id: int
    source_task: str
    source_version: int
    weight: float
    method: str
    depth: int = 1


@dataclass(frozen=True)
class PrefixRecord(Record):
    """One stored prefix version: everything needed to rebuild and check it.

    `config` holds the prefix geometry (`length`, `layers`, `kv_heads`, `head_dim`) and, for
    export, `hidden_size`, `positions` ("explicit" or "shifted") and optionally `backbone` and
    `task_type`; the stored "prefix" tensor is [length, layers * 2 * kv_heads * head_dim].
    """

    id: int
    task: str
    version: int
    is_current: bool
    status: str
    backbone_name: str
    backbone_fingerprint: str
    config: dict[str, Any]
    artifact_path: str
    sha256: str
    n_bytes: int
    n_stored: int
    train: TrainSummary
    run_id: int | None
    mlflow_run_id: str | None
    created_at: datetime
    optimizer_path: str | None = None
    optimizer_sha256: str | None = None
    lineage: tuple[LineageEdge, ...] = ()
    kind: str = "prefix"  # the per-task module's registered kind
    data_sha256: str | None = None  # the stored data it was trained and evaluated on


@dataclass(frozen=True)
class EvaluationRecord(Record):
    """One score of a task; `prefix_version` is None for baselines without a prefix."""

    id: int
    task: str
    prefix_id: int | None
    prefix_version: int | None
    position: int | None
    method: str
    metric: str
    value: float
    n: int
    predictions_sha256: str | None
    mlflow_run_id: str | None
    created_at: datetime
    stream: str | None = None  # the stream of `position` (None outside a stream)


@dataclass(frozen=True)
class TaskView(Record):
    """`Registry.show`: a task, its current prefix, that prefix's latest metrics and lineage."""

    task: TaskRecord
    current: PrefixRecord | None
    versions: int
    metrics: tuple[EvaluationRecord, ...]
    lineage: tuple[LineageEdge, ...]
    mlflow_run_id: str | None


@dataclass(frozen=True, eq=False)
class TaskEmbeddingRecord(Record):
    """A task's embedding (or routing keys: `vector` holds rows of `dim` values, flat).

    `vector` is a read-only float32 numpy array (a view of the stored bytes); as a dict it is a
    list of floats. Equal when every field is, the vector value by value.
    """

    id: int
    task: str
    method: str
    dim: int
    vector: np.ndarray
    created_at: datetime

    @property
    def stamp(self) -> str:
        """The row's id and creation time: unique to this row, even against the row of a
        registry made again from nothing (whose ids start over)."""
        return embedding_stamp(self.id, self.created_at)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskEmbeddingRecord):
            return NotImplemented
        same = (self.id, self.task, self.method, self.dim, self.created_at)
        theirs = (other.id, other.task, other.method, other.dim, other.created_at)
        return same == theirs and np.array_equal(self.vector, other.vector)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and arrays do not hash


@dataclass(frozen=True)
class ArrivalRecord(Record):
    id: int
    position: int
    task: str
    method: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    stream: str = "default"
    reeval: dict[str, Any] | None = None  # see pipelines.arrival.reeval; None: all re-scored


@dataclass(frozen=True)
class StreamRecord(Record):
    """A named stream with how far each method got (done arrivals) and its jobs by state."""

    id: int
    name: str
    description: str
    created_at: datetime
    arrivals: int = 0  # done arrivals of the prefix method: the stream's length
    jobs: tuple[tuple[str, int], ...] = ()  # (state, count)


@dataclass(frozen=True)
class JobRecord(Record):
    """A job: what to do (`kind`, `task`, `payload`), its state, attempts and lease.

    States: queued -> running -> done | failed (a failed attempt goes back to queued while
    attempts remain) ; queued -> cancelled. `position` is the stream position the arrival took.
    """

    id: int
    stream: str
    kind: str
    task: str
    state: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    error: str | None
    worker_id: str | None
    heartbeat_at: datetime | None
    lease_expires_at: datetime | None
    position: int | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None = None


@dataclass(frozen=True)
class TokenRecord(Record):
    """An API token (its secret is never stored: only its sha256)."""

    id: int
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class DatasetRecord(Record):
    """Task data stored in the registry: `path` (workspace-relative) holds the examples."""

    sha256: str
    path: str
    n_bytes: int
    n_train: int
    n_eval: int
    fingerprint: str
    format: str
    created_at: datetime


@dataclass(frozen=True)
class ArtifactProblem(Record):
    """A stored file that is missing or whose bytes do not hash to its recorded sha256."""

    prefix_id: int | None  # None for a stored dataset
    task: str  # for a dataset: a task trained on it, or "" (an uploaded set not learnt yet)
    version: int | None
    kind: str  # "prefix", "optimizer", "dataset" or "baseline"
    path: str
    expected_sha256: str
    actual_sha256: str | None  # None: the file is missing


@dataclass(frozen=True)
class MirrorProblem(Record):
    """A prefix's MLflow run that does not hold the registry's bytes (`check --mlflow`), or,
    with no prefix, an MLflow store that cannot be read."""

    prefix_id: int | None
    task: str
    version: int | None
    run_id: str | None
    problem: str


@dataclass(frozen=True)
class CheckReport(Record):
    """`Registry.check`: problems found and, with repair, what was done about them.

    `recent_orphans` are unreferenced files younger than the grace period: possibly a
    registration in flight, so never removed. `elsewhere` are the ids of prefixes whose files
    another workspace sharing the database wrote: not checked here (see `registry.integrity`).
    """

    ok: bool
    checked_files: int
    missing: tuple[ArtifactProblem, ...]
    corrupt: tuple[ArtifactProblem, ...]
    orphans: tuple[str, ...]
    recent_orphans: tuple[str, ...]
    repaired: bool
    removed: tuple[str, ...] = ()
    marked_broken: tuple[int, ...] = ()
    dropped_optimizer: tuple[int, ...] = ()
    restored: tuple[int, ...] = ()
    elsewhere: tuple[int, ...] = ()
    #: with `mlflow`: runs read back, their problems, prefixes mirrored again by the repair
    mlflow_checked: int | None = None
    mlflow: tuple[MirrorProblem, ...] = ()
    remirrored: tuple[int, ...] = ()


@dataclass(frozen=True)
class SyncReport(Record):
    """`Registry.sync_mlflow`: prefixes mirrored to MLflow now, and those that still failed."""

    tracking: str
    synced: tuple[int, ...]
    failed: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class ExportRecord(Record):
    """`Registry.export`: which prefix went where, as which files."""

    task: str
    version: int
    prefix_id: int
    format: str
    out: str
    files: tuple[str, ...]


def embedding_stamp(row_id: int, created_at: datetime | None) -> str:
    return f"{row_id}@{created_at.isoformat() if created_at else ''}"
