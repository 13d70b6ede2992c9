"""Repositories of what a stream records: evaluations, task embeddings and arrivals.

Like `registry.repository`, they work in the caller's session, never commit, and hand out frozen
records. Writes that a redone step may repeat (a score at a stream position, an arrival row)
are inserts that tolerate the existing row (`insert_once`): the database's unique constraints,
not locks, keep any number of writers from duplicating a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from registry import orm
from registry.records import ArrivalRecord, EvaluationRecord, TaskEmbeddingRecord
from registry.repository import aware

_E = orm.Evaluation
_S = aliased(orm.Stream)
_EVAL_COLUMNS = (_E, orm.Task.name, orm.Prefix.version, _S.name)


def insert_once(session: Session, model: Any, values: dict[str, Any]) -> bool:
    """INSERT the row unless a unique constraint says it is there already; True if inserted.

    `ON CONFLICT DO NOTHING` on both SQLite and PostgreSQL: a repeated write (a step redone
    after a kill, two workers racing) neither fails nor adds a second row.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    result = session.execute(insert(model).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)


class Evaluations:
    def __init__(self, session: Session) -> None:
        self.s = session

    def _select(self) -> Any:
        return (
            select(*_EVAL_COLUMNS)
            .join(orm.Task, _E.task_id == orm.Task.id)
            .outerjoin(orm.Prefix, _E.prefix_id == orm.Prefix.id)
            .outerjoin(_S, _E.stream_id == _S.id)
        )

    def add(self, **columns: Any) -> int:
        """Insert a score; one at a stream position that is already recorded (same task,
        method, stream and position) is kept as it is, and its id returned."""
        if columns.get("stream_id") is not None and columns.get("position") is not None:
            from registry.orm import utcnow

            insert_once(self.s, _E, {"created_at": utcnow(), **columns})
            return self.s.scalars(
                select(_E.id).where(
                    _E.task_id == columns["task_id"],
                    _E.method == columns.get("method", "prefix"),
                    _E.stream_id == columns["stream_id"],
                    _E.position == columns["position"],
                )
            ).one()
        row = _E(**columns)
        self.s.add(row)
        self.s.flush()
        return row.id

    def in_stream(self, stream_id: int) -> list[EvaluationRecord]:
        """Every score recorded in the stream, oldest first: one query for a whole report."""
        stmt = self._select().where(_E.stream_id == stream_id).order_by(_E.created_at, _E.id)
        return [_evaluation(*r) for r in self.s.execute(stmt)]

    def mark(self, stream_id: int) -> tuple[Any, ...]:
        """(count, newest id and time, count mirrored to MLflow) of the stream's scores: changed
        by any new score, by the one update scores ever get (their MLflow run id, set once) and
        by a registry made again at the same place (its rows' times differ)."""
        stmt = select(
            func.count(), func.max(_E.id), func.max(_E.created_at), func.count(_E.mlflow_run_id)
        ).where(_E.stream_id == stream_id)
        return tuple(self.s.execute(stmt).one())

    def get(self, evaluation_id: int) -> EvaluationRecord:
        return _evaluation(*self.s.execute(self._select().where(_E.id == evaluation_id)).one())

    def history(self, task_id: int) -> list[EvaluationRecord]:
        stmt = self._select().where(_E.task_id == task_id).order_by(_E.created_at, _E.id)
        return [_evaluation(*r) for r in self.s.execute(stmt)]

    def pending_mlflow(self) -> list[tuple[EvaluationRecord, str]]:
        """Evaluations of prefixes mirrored to MLflow that are not yet in their prefix's run."""
        stmt = (
            self._select()
            .add_columns(orm.Prefix.mlflow_run_id)
            .where(_E.mlflow_run_id.is_(None), orm.Prefix.mlflow_run_id.is_not(None))
            .order_by(_E.id)
        )
        return [(_evaluation(r[0], r[1], r[2], r[3]), r[4]) for r in self.s.execute(stmt)]

    def set_mlflow_run(self, evaluation_id: int, run_id: str) -> None:
        self.s.execute(update(_E).where(_E.id == evaluation_id).values(mlflow_run_id=run_id))

    def for_prefix(self, prefix_id: int) -> list[EvaluationRecord]:
        """All of the prefix's evaluations, newest first."""
        stmt = self._select().where(_E.prefix_id == prefix_id).order_by(_E.id.desc())
        return [_evaluation(*r) for r in self.s.execute(stmt)]

    def latest_for_prefix(self, prefix_id: int) -> list[EvaluationRecord]:
        """The prefix's newest evaluation of each (method, metric), by metric then newest."""
        newest = (
            select(func.max(_E.id)).where(_E.prefix_id == prefix_id).group_by(_E.method, _E.metric)
        )
        stmt = self._select().where(_E.id.in_(newest)).order_by(_E.metric, _E.id.desc())
        return [_evaluation(*r) for r in self.s.execute(stmt)]


class Arrivals:
    """Stream arrivals, and task embeddings."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def add_embedding(self, *, task_id: int, method: str, dim: int, vector: bytes) -> int:
        row = orm.TaskEmbedding(task_id=task_id, method=method, dim=dim, vector=vector)
        self.s.add(row)
        self.s.flush()
        return row.id

    def embeddings(self, method: str, task_id: int | None = None) -> list[tuple[Any, str]]:
        """(row, task name) pairs, newest first."""
        T = orm.TaskEmbedding
        stmt = (
            select(T, orm.Task.name)
            .join(orm.Task, T.task_id == orm.Task.id)
            .where(T.method == method)
        )
        if task_id is not None:
            stmt = stmt.where(T.task_id == task_id)
        return [(r[0], r[1]) for r in self.s.execute(stmt.order_by(T.id.desc()))]

    def newest_embeddings(self, method: str) -> list[tuple[Any, str]]:
        """(row, task name) of each task's newest embedding under `method`, by task name."""
        T = orm.TaskEmbedding
        newest = select(func.max(T.id)).where(T.method == method).group_by(T.task_id)
        stmt = (
            select(T, orm.Task.name)
            .join(orm.Task, T.task_id == orm.Task.id)
            .where(T.id.in_(newest))
            .order_by(orm.Task.name)
        )
        return [(r[0], r[1]) for r in self.s.execute(stmt)]

    def newest_embedding_ids(self, method: str) -> dict[str, tuple[int, Any]]:
        T = orm.TaskEmbedding
        newest = select(func.max(T.id)).where(T.method == method).group_by(T.task_id)
        stmt = (
            select(orm.Task.name, T.id, T.created_at)
            .join(orm.Task, T.task_id == orm.Task.id)
            .where(T.id.in_(newest))
        )
        return {name: (int(i), created) for name, i, created in self.s.execute(stmt)}

    def embeddings_by_id(self, ids: list[int]) -> list[tuple[Any, str]]:
        T = orm.TaskEmbedding
        stmt = (
            select(T, orm.Task.name)
            .join(orm.Task, T.task_id == orm.Task.id)
            .where(T.id.in_(ids))
            .order_by(T.id)
        )
        return [(r[0], r[1]) for r in self.s.execute(stmt)]

    def generation(self) -> tuple[Any, ...]:
        """Counts and ids of tasks, prefixes (which are current, which broken) and embeddings,
        in one statement: any registration, new version, repair or embedding changes one."""
        P, T, E = orm.Prefix, orm.Task, orm.TaskEmbedding
        parts = (
            select(func.count()).select_from(T),
            select(func.max(T.id)),
            select(func.count()).select_from(P),
            select(func.max(P.id)),
            select(func.sum(P.id)).where(P.is_current),
            select(func.sum(P.id)).where(P.status != "ok"),
            select(func.count()).select_from(E),
            select(func.max(E.id)),
        )
        return tuple(self.s.execute(select(*(q.scalar_subquery() for q in parts))).one())

    def add_arrival(
        self, *, stream_id: int, position: int, task_id: int, method: str, status: str
    ) -> int:
        """The arrival of `task` at `position` of the stream for `method`: inserted, or the
        row already there (a redone step) returned. A different task already holding the
        position, or the task holding another position, is an IntegrityError."""
        from registry.orm import utcnow

        values = dict(
            stream_id=stream_id, position=position, task_id=task_id, method=method, status=status
        )
        insert_once(self.s, orm.Arrival, {"started_at": utcnow(), **values})
        A = orm.Arrival
        row = self.s.scalars(
            select(A).where(A.stream_id == stream_id, A.method == method, A.position == position)
        ).one_or_none()
        if row is None or row.task_id != task_id:
            from tasks.errors import IntegrityError

            raise IntegrityError(
                f"stream position {position} ({method}) is held by another task, or the task "
                "already arrived at another position"
            )
        return row.id

    def finish_arrival(
        self, arrival_id: int, status: str, when: datetime, reeval: dict[str, Any] | None = None
    ) -> None:
        self.s.execute(
            update(orm.Arrival)
            .where(orm.Arrival.id == arrival_id)
            .values(status=status, finished_at=when, reeval=reeval)
        )

    def arrivals(self, method: str | None, stream_id: int | None = None) -> list[ArrivalRecord]:
        A = orm.Arrival
        stmt = (
            select(A, orm.Task.name, orm.Stream.name)
            .join(orm.Task, A.task_id == orm.Task.id)
            .join(orm.Stream, A.stream_id == orm.Stream.id)
        )
        if method is not None:
            stmt = stmt.where(A.method == method)
        if stream_id is not None:
            stmt = stmt.where(A.stream_id == stream_id)
        stmt = stmt.order_by(A.stream_id, A.method, A.position, A.id)
        return [
            ArrivalRecord(
                id=a.id,
                position=a.position,
                task=name,
                method=a.method,
                status=a.status,
                started_at=aware(a.started_at),
                finished_at=aware(a.finished_at),
                stream=stream,
                reeval=a.reeval,
            )
            for a, name, stream in self.s.execute(stmt).all()
        ]


def pack_vector(values: Sequence[float] | np.ndarray) -> bytes:
    """Little-endian float32 bytes of an embedding (flattened)."""
    return np.ascontiguousarray(values, dtype="<f4").reshape(-1).tobytes()


def unpack_vector(data: bytes) -> np.ndarray:
    """A read-only float32 view of stored embedding bytes (no copy, no Python floats)."""
    return np.frombuffer(data, dtype="<f4")


def embedding_record(row: Any, task: str, vector: np.ndarray) -> TaskEmbeddingRecord:
    return TaskEmbeddingRecord(
        id=row.id,
        task=task,
        method=row.method,
        dim=row.dim,
        vector=vector,
        created_at=aware(row.created_at),
    )


def _evaluation(
    row: orm.Evaluation, task: str, version: int | None, stream: str | None = None
) -> EvaluationRecord:
    return EvaluationRecord(
        id=row.id,
        task=task,
        prefix_id=row.prefix_id,
        prefix_version=version,
        position=row.position,
        method=row.method,
        metric=row.metric,
        value=row.value,
        n=row.n,
        predictions_sha256=row.predictions_sha256,
        mlflow_run_id=row.mlflow_run_id,
        created_at=aware(row.created_at),
        stream=stream,
    )
