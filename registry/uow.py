"""Unit of work: one session, its repositories, and an explicit commit.

Leaving the `with` block without `commit()` rolls back. `transact` runs a function in a fresh
unit of work and retries it when the database says "try again": SQLite's "database is locked",
PostgreSQL's serialization failures and deadlocks, and (for writes that allocate numbers, such as
prefix versions) a unique-constraint race lost to another process; other constraint failures
are bugs and raise at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Engine
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
        try:
            with UnitOfWork(factory) as uow:
                result = fn(uow)
                if commit:
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
            # Known gap: a connection lost during COMMIT itself leaves the outcome unknown, and
            # the retry may write a row twice where no unique key stops it (the window is the
            # commit's round trip; not seen in the restart drill).
            if _lost(e) and time.monotonic() - began < LOST_S:
                time.sleep(0.5 + random.random())
                continue
            if not isinstance(e, sa_exc.OperationalError) or not _transient(e):
                raise
            if attempt == attempts - 1:
                raise
        time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
        attempt += 1


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
