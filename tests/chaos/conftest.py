"""The reliability drills (`make chaos`, `make chaos-quick`): seeded fault injection against the
registry's guarantees. Each drill counts its cases and failures in a `Drill`; the session writes
them to `$CHAOS_JSON` when set, from which `python -m bench.reliability` writes
docs/RELIABILITY.md. `CHAOS_SCALE=full` runs the drills at the sizes the issue asks for (100 kills,
8 writers on each database, ...); the default, `quick`, runs a few cases of each in minutes and
is part of `make test`.

The fixtures of the integration and service suites are used here as they are (imported below).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures)
    _no_foreign_settings,
    child_environ,
    cli,
    cli_command,
    run_child,
)
from tests.service.conftest import base_home, client_for  # noqa: F401  (fixtures)

SCALE = os.environ.get("CHAOS_SCALE", "quick")
if SCALE not in ("quick", "full"):
    raise pytest.UsageError(f"CHAOS_SCALE={SCALE!r}: use quick or full")
FULL = SCALE == "full"


def scaled(quick: int, full: int) -> int:
    """A drill's size at this run's scale."""
    return full if FULL else quick


@dataclass
class Drill:
    """One drill: its cases (each passed or failed, with what was seen) and what it checks."""

    name: str
    checks: str
    cases: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def case(self, case_id: str, ok: bool, seen: str = "", **details: Any) -> bool:
        self.cases.append({"id": case_id, "ok": bool(ok), "seen": seen, **details})
        return ok

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if not c["ok"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checks": self.checks,
            "scale": SCALE,
            "cases": len(self.cases),
            "failures": len(self.failures),
            "details": self.cases,
            **self.extra,
        }

    def assert_clean(self) -> None:
        bad = "\n".join(f"  {c['id']}: {c['seen']}" for c in self.failures)
        assert not self.failures, f"{self.name}: {len(self.failures)} failed cases\n{bad}"


@pytest.fixture(scope="session")
def drills() -> Iterator[dict[str, Drill]]:
    """Every drill of the session, written to $CHAOS_JSON (merged by name) at its end."""
    found: dict[str, Drill] = {}
    yield found
    out = os.environ.get("CHAOS_JSON")
    if not out or not found:
        return
    path = Path(out)
    doc = json.loads(path.read_text()) if path.exists() else {"drills": {}}
    doc["drills"].update({name: d.to_dict() for name, d in found.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def drill(drills: dict[str, Drill]):
    def make(name: str, checks: str) -> Drill:
        drills[name] = Drill(name, checks)
        return drills[name]

    return make


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def workspace_state(home: Path) -> dict[str, Any]:
    """Everything a command could have written to `home`: each file's hash (SQLite files by
    their rows, since opening a database may touch its bytes without changing a row)."""
    if not home.exists():
        return {}
    state: dict[str, Any] = {}
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home).as_posix()
        if not path.is_file() or rel.endswith(("-wal", "-shm", "-journal")):
            continue
        state[rel] = _rows(path) if path.suffix == ".db" else _sha(path)
    return state


def _rows(db: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        con.close()


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two `workspace_state`s, as short lines."""
    out = [f"new file {k}" for k in after.keys() - before.keys()]
    out += [f"removed {k}" for k in before.keys() - after.keys()]
    for k in before.keys() & after.keys():
        if before[k] != after[k]:
            if isinstance(before[k], dict):
                out += [
                    f"{k}: table {t} changed" for t in after[k] if before[k].get(t) != after[k][t]
                ]
            else:
                out.append(f"{k} changed")
    return sorted(out)


PG_ADMIN = os.environ.get("CONTINUAL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")  # fmt: skip


@pytest.fixture
def pg_urls() -> Iterator[Callable[[], str]]:
    """`pg_urls()`: a fresh PostgreSQL database at each call, all dropped at the end (skipped
    where no server is reachable)."""
    import secrets

    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(PG_ADMIN)
    info = {"host": u.host or "127.0.0.1", "port": u.port or 5432, "user": u.username,
            "password": u.password, "dbname": u.database or "postgres", "connect_timeout": 3}  # fmt: skip

    def admin(sql: str) -> None:  # a connection each time: a drill may restart the server
        with psycopg.connect(**info, autocommit=True) as c:
            c.execute(sql)

    try:
        admin("SELECT 1")
    except psycopg.Error as e:
        pytest.skip(f"no PostgreSQL at {info['host']}:{info['port']}: {str(e).splitlines()[0]}")
    made: list[str] = []

    def make() -> str:
        made.append(f"continual_chaos_{secrets.token_hex(4)}")
        admin(f'CREATE DATABASE "{made[-1]}"')
        return u.set(database=made[-1]).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        for name in made:
            for _ in range(60):  # the server may still be starting after a drill restarted it
                try:
                    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    break
                except psycopg.OperationalError:
                    time.sleep(1)
