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
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="RESTRICT"))
    backbone_id: Mapped[int] = mapped_column(ForeignKey("backbones.id", ondelete="RESTRICT"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="RESTRICT"))
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
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix_id: Mapped[int | None] = mapped_column(ForeignKey("prefixes.id", ondelete="RESTRICT"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="RESTRICT"))
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


class Arrival(Base):
    """A task's arrival in a stream, at a position, handled by a method."""

    __tablename__ = "arrivals"
    __table_args__ = (
        Index("ix_arrivals_method_position", "method", "position"),
        Index("ix_arrivals_task_id", "task_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="RESTRICT"))
    method: Mapped[str] = mapped_column(METHOD)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
