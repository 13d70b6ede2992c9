"""Engines: SQLite (the embedded default, one file in the workspace) or PostgreSQL by URL.

SQLite connections get their pragmas from a `connect` listener (WAL, busy_timeout, foreign keys),
and SQLAlchemy's own transaction handling is replaced by explicit `BEGIN` statements so that write
transactions can take the write lock up front with `BEGIN IMMEDIATE`: two writers then queue on
busy_timeout instead of failing with "database is locked" when a read lock would need upgrading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tasks.errors import ConfigError

DB_FILE = "registry.db"
WRITE = "continual_write"  # execution option: this connection's transactions will write
BUSY_TIMEOUT_MS = 30_000
_PRAGMAS = (
    f"busy_timeout={BUSY_TIMEOUT_MS}",  # first: the WAL switch below may itself wait for a lock
    "journal_mode=WAL",
    "foreign_keys=ON",
    "synchronous=NORMAL",
)


def resolve_url(workspace: Path, url: str | None) -> str:
    """The database URL: `url` if given (plain `postgresql://` gets psycopg 3), else SQLite."""
    if url is None:
        return f"sqlite:///{workspace / DB_FILE}"
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(
            f"invalid registry URL {url!r}: {e}; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"registry URL {url!r}: only sqlite and postgresql are supported")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite ones carry the pragma and BEGIN listeners."""
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    # check_same_thread off: a worker's heartbeat thread uses the pool too; the pool never hands
    # one connection to two threads at once.
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) with transactions marked as writes (`BEGIN IMMEDIATE`)."""
    return engine.execution_options(**{WRITE: True})


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver must not emit its own BEGIN
    cursor = dbapi_connection.cursor()
    for pragma in _PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get(WRITE) else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")
