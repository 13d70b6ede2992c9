"""Unit of work: one session, its repositories, and an explicit commit.

Leaving the `with` block without `commit()` rolls back. `transact` runs a function in a fresh
unit of work and retries it when the database says "try again": SQLite's "database is locked",
PostgreSQL's serialization failures and deadlocks, and (for writes that allocate numbers, such as
prefix versions) a unique-constraint race lost to another process; other constraint failures
are bugs and raise at once. A lost connection is retried too; if it was lost during COMMIT, the
server is first asked whether that transaction committed (PostgreSQL's `txid_status`), so a
write whose answer was lost is not done twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from registry.db import writer
from registry.job_repository import Datasets, Jobs, Streams
from registry.prefix_repository import Prefixes
from registry.repository import Backbones, Runs, Tasks, Tokens
from registry.stream_repository import Arrivals, Evaluations
from tasks.errors import IntegrityError

T = TypeVar("T")
ATTEMPTS = 12
_PG_RETRY = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_SQLITE_RETRY = ("database is locked", "database table is locked", "database is busy")
#: a lost or refused connection (PostgreSQL restarting, a network blip): retried for this long
LOST_S = 90.0
_PG_LOST = {"57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"}
_LOST = (
    "connection failed", "server closed the connection", "terminating connection",
    "the database system is", "connection refused", "could not connect", "consuming input failed",
    "connection is closed", "connection already closed",
)  # fmt: skip


class UnitOfWork:
    """`with UnitOfWork(factory) as uow: ...; uow.commit()`. The caller owns the session."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        s = self.session
        self.backbones, self.tasks, self.runs = Backbones(s), Tasks(s), Runs(s)
        self.prefixes, self.evaluations, self.arrivals = Prefixes(s), Evaluations(s), Arrivals(s)
        self.streams, self.jobs, self.datasets = Streams(s), Jobs(s), Datasets(s)
        self.tokens = Tokens(s)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.session.rollback()  # a no-op after commit()
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def references(self, sha256: str) -> bool:
        """Whether a row points at the stored file of this hash (a prefix, its optimizer
        state or a dataset)."""
        return self.prefixes.references(sha256) or self.datasets.get(sha256) is not None


class Database:
    """Session factories over one engine: reads, and writes (`BEGIN IMMEDIATE` on SQLite)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads = sessionmaker(engine, expire_on_commit=False)
        self.writes = sessionmaker(writer(engine), expire_on_commit=False)

    def read(self, fn: Callable[[UnitOfWork], T]) -> T:
        return transact(self.reads, fn, commit=False)

    def write(self, fn: Callable[[UnitOfWork], T], *, retry_conflicts: bool = False) -> T:
        return transact(self.writes, fn, commit=True, retry_conflicts=retry_conflicts)


def transact(
    factory: sessionmaker[Session],
    fn: Callable[[UnitOfWork], T],
    *,
    commit: bool,
    retry_conflicts: bool = False,
    attempts: int = ATTEMPTS,
) -> T:
    """Run `fn` in a unit of work (committing if `commit`), retrying transient failures: lock
    and serialization conflicts (`attempts` times), and a lost database connection (for up to
    `LOST_S` seconds: a PostgreSQL restart takes a few)."""
    began = time.monotonic()
    attempt = 0
    while True:
        xid: int | None = None  # the transaction's id on PostgreSQL, to learn a COMMIT's fate
        try:
            with UnitOfWork(factory) as uow:
                result = fn(uow)
                if commit:
                    xid = _xid(uow.session)
                    uow.commit()
                return result
        except sa_exc.IntegrityError as e:
            if not (retry_conflicts and _unique_violation(e)):
                raise
            if attempt == attempts - 1:
                raise IntegrityError(
                    f"registry write kept conflicting with concurrent writers after {attempts} "
                    f"tries: {e.orig}"
                ) from e
        except sa_exc.DBAPIError as e:
            # A connection lost during COMMIT leaves its outcome unknown to us: the server may
            # have committed before the answer was lost. Retrying blindly could write rows
            # twice, so ask the server what became of the transaction first.
            if xid is not None and _lost(e) and _committed(factory, xid, began, e):
                return result
            if _lost(e) and time.monotonic() - began < LOST_S:
                time.sleep(0.5 + random.random())
                continue
            if not isinstance(e, sa_exc.OperationalError) or not _transient(e):
                raise
            if attempt == attempts - 1:
                raise
        time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
        attempt += 1


def _xid(session: Session) -> int | None:
    """The current transaction's id on PostgreSQL (assigned now, as a write would), else None."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.execute(text("SELECT txid_current()")).scalar_one())


def _committed(
    factory: sessionmaker[Session], xid: int, began: float, error: sa_exc.DBAPIError
) -> bool:
    """Whether transaction `xid`, whose COMMIT lost its connection, committed: asked on a new
    connection (`txid_status`) until the server answers 'committed' or 'aborted', for up to
    `LOST_S` from `began`. A server that never answers leaves the outcome unknown: an error
    that says so (retrying could write twice, giving up could lose the write)."""
    while True:
        try:
            with factory() as session:
                status = session.execute(text("SELECT txid_status(:x)"), {"x": xid}).scalar()
        except sa_exc.DBAPIError as e:
            if not _lost(e):
                raise
            status = None
        if status in ("committed", "aborted"):
            return status == "committed"
        if time.monotonic() - began >= LOST_S:
            raise IntegrityError(
                f"the database connection was lost while committing transaction {xid} and the "
                f"server did not say within {LOST_S:.0f} s whether it committed ({error.orig}); "
                "run `continual registry check` once it is back, then retry the command"
            ) from error
        time.sleep(0.5 + random.random())


def _lost(e: sa_exc.DBAPIError) -> bool:
    """Whether the database connection was lost or refused (not a bad statement)."""
    if e.connection_invalidated or getattr(e.orig, "sqlstate", None) in _PG_LOST:
        return True
    return any(s in str(e.orig).lower() for s in _LOST)


def _unique_violation(e: sa_exc.IntegrityError) -> bool:
    if getattr(e.orig, "sqlstate", None) == "23505":
        return True
    return "unique constraint failed" in str(e.orig).lower()


def _transient(e: sa_exc.OperationalError) -> bool:
    if getattr(e.orig, "sqlstate", None) in _PG_RETRY:
        return True
    return any(s in str(e.orig).lower() for s in _SQLITE_RETRY)
