"""Repositories of named streams, jobs (with leases) and stored task data.

They work in the caller's session, never commit, and hand out frozen records. A job is taken
with a compare-and-set UPDATE (`WHERE id = ? AND <still claimable>`), so two workers racing
for one job cannot both get it, on SQLite as on PostgreSQL, with no lock held between calls.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from registry import orm
from registry.records import DatasetRecord, JobRecord, StreamRecord
from registry.repository import aware
from registry.stream_repository import insert_once
from tasks.errors import ConfigError

_J = orm.Job
#: States a job can leave only by a worker or a user: the stream's head is among them.
LIVE = ("queued", "running", "failed")
TERMINAL = ("done", "cancelled")


class Streams:
    """Named streams."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def ensure(self, name: str, description: str = "") -> int:
        """The stream's id, creating it if it is new (two creators race harmlessly)."""
        insert_once(
            self.s, orm.Stream, {"name": name, "description": description, "created_at": _now()}
        )
        return self.s.scalars(select(orm.Stream.id).where(orm.Stream.name == name)).one()

    def find(self, name: str) -> int | None:
        return self.s.scalars(select(orm.Stream.id).where(orm.Stream.name == name)).first()

    def get(self, name: str) -> int:
        found = self.find(name)
        if found is None:
            known = ", ".join(self.names()) or "none yet"
            raise ConfigError(f"no stream named {name!r} in the registry (streams: {known})")
        return found

    def names(self) -> list[str]:
        return list(self.s.scalars(select(orm.Stream.name).order_by(orm.Stream.id)))

    def all(self) -> list[StreamRecord]:
        A = orm.Arrival
        done = dict(
            self.s.execute(
                select(A.stream_id, func.count())
                .where(A.method == "prefix", A.status == "done")
                .group_by(A.stream_id)
            ).all()
        )
        jobs: dict[int, list[tuple[str, int]]] = {}
        for sid, state, n in self.s.execute(
            select(_J.stream_id, _J.state, func.count()).group_by(_J.stream_id, _J.state)
        ):
            jobs.setdefault(sid, []).append((state, n))
        return [
            StreamRecord(
                id=row.id,
                name=row.name,
                description=row.description,
                created_at=aware(row.created_at),
                arrivals=done.get(row.id, 0),
                jobs=tuple(sorted(jobs.get(row.id, []))),
            )
            for row in self.s.scalars(select(orm.Stream).order_by(orm.Stream.id))
        ]


class Jobs:
    """Jobs and their leases."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def _select(self) -> Any:
        return select(_J, orm.Stream.name).join(orm.Stream, _J.stream_id == orm.Stream.id)

    def add(self, *, stream_id: int, kind: str, task: str, payload: dict[str, Any]) -> int:
        row = _J(
            stream_id=stream_id,
            kind=kind,
            task=task,
            state="queued",
            payload=payload,
            attempts=0,
            max_attempts=3,
        )
        self.s.add(row)
        self.s.flush()
        return row.id

    def get(self, job_id: int) -> JobRecord | None:
        found = self.s.execute(self._select().where(_J.id == job_id)).first()
        return _job(*found) if found else None

    def live_for(self, stream_id: int, task: str) -> JobRecord | None:
        """The task's job in the stream that is not cancelled, if any."""
        stmt = self._select().where(
            _J.stream_id == stream_id, _J.task == task, _J.state != "cancelled"
        )
        found = self.s.execute(stmt).first()
        return _job(*found) if found else None

    def page(
        self, stream_id: int | None, state: str | None, limit: int, offset: int
    ) -> list[JobRecord]:
        stmt = self._select()
        if stream_id is not None:
            stmt = stmt.where(_J.stream_id == stream_id)
        if state is not None:
            stmt = stmt.where(_J.state == state)
        stmt = stmt.order_by(_J.id).limit(limit).offset(offset)
        return [_job(*r) for r in self.s.execute(stmt)]

    def count(self, stream_id: int | None = None, states: tuple[str, ...] = ()) -> int:
        stmt = select(func.count()).select_from(_J)
        if stream_id is not None:
            stmt = stmt.where(_J.stream_id == stream_id)
        if states:
            stmt = stmt.where(_J.state.in_(states))
        return self.s.scalar(stmt) or 0

    def heads(self, stream_ids: list[int] | None = None) -> list[JobRecord]:
        """Per stream, its oldest job that is not done or cancelled: the only one that may run
        (arrivals of a stream run in order). Oldest heads first."""
        first = select(_J.stream_id, func.min(_J.id).label("head")).where(_J.state.in_(LIVE))
        if stream_ids is not None:
            first = first.where(_J.stream_id.in_(stream_ids))
        sub = first.group_by(_J.stream_id).subquery()
        stmt = self._select().join(sub, _J.id == sub.c.head).order_by(_J.id)
        return [_job(*r) for r in self.s.execute(stmt)]

    def take(
        self, job_id: int, worker_id: str, now: datetime, lease_s: float, *, force: bool = False
    ) -> bool:
        """Compare-and-set: the job becomes ours if it is still queued, or running under a
        lease that has expired (`force`: running at all, its worker being known dead). True if
        we got it."""
        running = _J.state == "running"
        result = self.s.execute(
            update(_J)
            .where(
                _J.id == job_id,
                or_(
                    _J.state == "queued",
                    running if force else and_(running, _J.lease_expires_at < now),
                ),
            )
            .values(
                state="running",
                worker_id=worker_id,
                heartbeat_at=now,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=_J.attempts + 1,
                started_at=func.coalesce(_J.started_at, now),
            )
        )
        return result.rowcount == 1

    def renew(self, job_id: int, worker_id: str, now: datetime, lease_s: float) -> bool:
        """Heartbeat: extend our lease; False if the job is no longer ours."""
        result = self.s.execute(
            update(_J)
            .where(_J.id == job_id, _J.worker_id == worker_id, _J.state == "running")
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
        )
        return result.rowcount == 1

    def report(self, job_id: int, worker_id: str, progress: dict[str, Any]) -> bool:
        """Our running job's progress (phase, step, loss); False if it is no longer ours."""
        result = self.s.execute(
            update(_J)
            .where(_J.id == job_id, _J.worker_id == worker_id, _J.state == "running")
            .values(progress=progress)
        )
        return result.rowcount == 1

    def settle(
        self,
        job_id: int,
        *,
        state: str,
        worker_id: str | None = None,
        from_states: tuple[str, ...] = ("running",),
        **values: Any,
    ) -> bool:
        """Move the job to `state` if it is in one of `from_states` (and, given `worker_id`,
        still ours). True if it moved."""
        stmt = update(_J).where(_J.id == job_id, _J.state.in_(from_states))
        if worker_id is not None:
            stmt = stmt.where(_J.worker_id == worker_id)
        if state in TERMINAL + ("failed",):
            values.setdefault("finished_at", _now())
        if state in ("queued",) + TERMINAL + ("failed",):
            values.update(worker_id=None, lease_expires_at=None)
        result = self.s.execute(stmt.values(state=state, **values))
        return result.rowcount == 1


class Datasets:
    """Stored task data."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, **columns: Any) -> None:
        insert_once(self.s, orm.Dataset, {"created_at": _now(), **columns})

    def get(self, sha256: str) -> DatasetRecord | None:
        row = self.s.get(orm.Dataset, sha256)
        if row is None:
            return None
        return DatasetRecord(
            sha256=row.sha256,
            path=row.path,
            n_bytes=row.n_bytes,
            n_train=row.n_train,
            n_eval=row.n_eval,
            fingerprint=row.fingerprint,
            format=row.format,
            created_at=aware(row.created_at),
        )

    def paths(self) -> list[tuple[str, str]]:
        """(path, sha256) of every stored dataset."""
        return [(r.path, r.sha256) for r in self.s.scalars(select(orm.Dataset))]

    def refs(self) -> list[tuple[str, str, str]]:
        """(path, sha256, a task trained on it or "") of every stored dataset, for the
        integrity check."""
        used = (
            select(orm.Prefix.data_sha256, func.min(orm.Task.name).label("task"))
            .join(orm.Task, orm.Prefix.task_id == orm.Task.id)
            .where(orm.Prefix.data_sha256.is_not(None))
            .group_by(orm.Prefix.data_sha256)
            .subquery()
        )
        stmt = select(orm.Dataset.path, orm.Dataset.sha256, used.c.task).outerjoin(
            used, used.c.data_sha256 == orm.Dataset.sha256
        )
        return [(path, sha, task or "") for path, sha, task in self.s.execute(stmt)]


def _now() -> datetime:
    return orm.utcnow()


def _job(row: orm.Job, stream: str) -> JobRecord:
    return JobRecord(
        id=row.id,
        stream=stream,
        kind=row.kind,
        task=row.task,
        state=row.state,
        payload=row.payload,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        error=row.error,
        worker_id=row.worker_id,
        heartbeat_at=aware(row.heartbeat_at),
        lease_expires_at=aware(row.lease_expires_at),
        position=row.position,
        result=row.result,
        created_at=aware(row.created_at),
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        progress=row.progress,
    )
