"""SQLAlchemy 2 typed models of the registry schema. Rows never leave `registry/`.

Every constraint and index is named, so Alembic migrations can refer to them on SQLite and
PostgreSQL alike; `tests/registry/test_registry_schema.py` runs `alembic check` so these models and
`registry/migrations/` never drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
FINGERPRINT = String(128)
SHA256 = String(64)
METHOD = String(64)
MLFLOW_RUN = String(64)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Backbone(Base):
    """A frozen pretrained model, known by the fingerprint of its weights."""

    __tablename__ = "backbones"
    __table_args__ = (UniqueConstraint("fingerprint", name="uq_backbones_fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(500))
    fingerprint: Mapped[str] = mapped_column(FINGERPRINT)
    n_params: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    """A task by name; its spec is the latest one registered under that name."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("name", name="uq_tasks_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]]
    data_fingerprint: Mapped[str] = mapped_column(FINGERPRINT)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """What reproduces a training run: seed, full config, package versions, backbone."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any]]
    packages: Mapped[dict[str, Any]]
    backbone_fingerprint: Mapped[str] = mapped_column(FINGERPRINT)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prefix(Base):
    """One trained version of a task's prefix; exactly one per task has `is_current`."""

    __tablename__ = "prefixes"
    __table_args__ = (
        UniqueConstraint("task_id", "version", name="uq_prefixes_task_id_version"),
        CheckConstraint("status IN ('ok', 'broken')", name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
        # At most one current prefix per task, enforced by the database (race-safe).
        Index(
            "uq_prefixes_current_task_id",
            "task_id",
            unique=True,
            sqlite_where=text("is_current"),
            postgresql_where=text("is_current"),
        ),
        Index("ix_prefixes_backbone_id", "backbone_id"),
        Index("ix_prefixes_run_id", "run_id"),
        Index("ix_prefixes_data_sha256", "data_sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="RESTRICT"))
    backbone_id: Mapped[int] = mapped_column(ForeignKey("backbones.id", ondelete="RESTRICT"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="RESTRICT"))
    # The per-task module's registered kind (continual's module registry): "prefix" first.
    kind: Mapped[str] = mapped_column(String(32), default="prefix", server_default="prefix")
    # The task data this version was trained and evaluated on, stored in the registry.
    data_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.sha256", ondelete="RESTRICT")
    )
    version: Mapped[int] = mapped_column(Integer)
    is_current: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    config: Mapped[dict[str, Any]]
    artifact_path: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(SHA256)
    n_bytes: Mapped[int] = mapped_column(BigInteger)
    n_trainable: Mapped[int] = mapped_column(BigInteger)
    n_stored: Mapped[int] = mapped_column(BigInteger)
    optimizer_path: Mapped[str | None] = mapped_column(String(300))
    optimizer_sha256: Mapped[str | None] = mapped_column(SHA256)
    train_steps: Mapped[int] = mapped_column(Integer)
    train_seconds: Mapped[float] = mapped_column(Float)
    final_loss: Mapped[float | None] = mapped_column(Float)
    losses: Mapped[list[float]] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(MLFLOW_RUN)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PrefixLineage(Base):
    """Which earlier prefixes (with which weights, by which method) a prefix was initialised from."""

    __tablename__ = "prefix_lineage"
    __table_args__ = (Index("ix_prefix_lineage_source_prefix_id", "source_prefix_id"),)

    prefix_id: Mapped[int] = mapped_column(
        ForeignKey("prefixes.id", ondelete="CASCADE"), primary_key=True
    )
    source_prefix_id: Mapped[int] = mapped_column(
        ForeignKey("prefixes.id", ondelete="RESTRICT"), primary_key=True
    )
    weight: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(METHOD)


class Evaluation(Base):
    """One score of one task, by a prefix (method 'prefix') or a baseline, at a stream position."""

    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_evaluations_task_id_created_at_id", "task_id", "created_at", "id"),
        Index("ix_evaluations_prefix_id_id", "prefix_id", "id"),
        Index("ix_evaluations_stream_id_position", "stream_id", "position"),
        # One score per task, method and stream position: a repeated write is a no-op. Scores
        # outside a stream (NULL stream and position) are not constrained (NULLs are distinct).
        UniqueConstraint(
            "task_id",
            "method",
            "stream_id",
            "position",
            name="uq_evaluations_task_id_method_stream_id_position",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix_id: Mapped[int | None] = mapped_column(ForeignKey("prefixes.id", ondelete="RESTRICT"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="RESTRICT"))
    stream_id: Mapped[int | None] = mapped_column(ForeignKey("streams.id", ondelete="RESTRICT"))
    position: Mapped[int | None] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(METHOD, default="prefix", server_default="prefix")
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    predictions_sha256: Mapped[str | None] = mapped_column(SHA256)
    mlflow_run_id: Mapped[str | None] = mapped_column(MLFLOW_RUN)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskEmbedding(Base):
    """A task's embedding under one method, stored as little-endian float32 bytes."""

    __tablename__ = "task_embeddings"
    __table_args__ = (Index("ix_task_embeddings_method_task_id", "method", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(METHOD)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Stream(Base):
    """A named stream of arrivals; a registry holds many, each with its own positions."""

    __tablename__ = "streams"
    __table_args__ = (UniqueConstraint("name", name="uq_streams_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Arrival(Base):
    """A task's arrival in a stream, at a position, handled by a method."""

    __tablename__ = "arrivals"
    __table_args__ = (
        # A position of a stream holds one task per method, and a task arrives once per
        # stream and method: a repeated insert is a no-op, never a second row.
        UniqueConstraint(
            "stream_id", "method", "position", name="uq_arrivals_stream_id_method_position"
        ),
        UniqueConstraint(
            "stream_id", "method", "task_id", name="uq_arrivals_stream_id_method_task_id"
        ),
        Index("ix_arrivals_task_id", "task_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id", ondelete="RESTRICT"))
    position: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="RESTRICT"))
    method: Mapped[str] = mapped_column(METHOD)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # How the earlier tasks were re-evaluated at this arrival (prefix method): the mode, the
    # tasks re-scored, and the hashes that carry the others' scores (None: every task re-scored).
    reeval: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Dataset(Base):
    """A task's train and eval examples, stored once in the blob store under their sha256."""

    __tablename__ = "datasets"

    sha256: Mapped[str] = mapped_column(SHA256, primary_key=True)
    path: Mapped[str] = mapped_column(String(300))
    n_bytes: Mapped[int] = mapped_column(BigInteger)
    n_train: Mapped[int] = mapped_column(Integer)
    n_eval: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(FINGERPRINT)
    format: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


class Job(Base):
    """A unit of work a worker takes under a lease: today, a task's arrival in a stream.

    A worker owns a running job while `lease_expires_at` is in the future and renews it by
    heartbeats; a job whose lease expired (its worker was killed or lost) is taken by another
    worker. Jobs of a stream run one at a time in id order; streams run in parallel.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="state"
        ),
        Index("ix_jobs_state_stream_id_id", "state", "stream_id", "id"),
        # A task arrives once per stream: no second live job for it (cancelled ones aside).
        Index(
            "uq_jobs_stream_id_task",
            "stream_id",
            "task",
            unique=True,
            sqlite_where=text("state <> 'cancelled'"),
            postgresql_where=text("state <> 'cancelled'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    position: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Token(Base):
    """A bearer token of the HTTP API: only its sha256 is kept, with its scope (read|write)."""

    __tablename__ = "tokens"
    __table_args__ = (
        CheckConstraint("scope IN ('read', 'write')", name="scope"),
        UniqueConstraint("sha256", name="uq_tokens_sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(8))
    sha256: Mapped[str] = mapped_column(SHA256)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
