"""Fixtures for the registry tests: every registry test runs on SQLite and on PostgreSQL.

The PostgreSQL params use one fresh database per test session (`continual_test_<random>` on
127.0.0.1:5432, or $CONTINUAL_TEST_PG_URL's server), emptied before each test and dropped at the
end; they are skipped, saying why, only when no server answers.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import NullTracker, Registry


def _load_testkit() -> None:
    """Make `import registry_testkit` work in the test modules (pytest runs with
    --import-mode=importlib, which puts no test folder on sys.path)."""
    path = Path(__file__).with_name("registry_testkit.py")
    spec = importlib.util.spec_from_file_location("registry_testkit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["registry_testkit"] = module
    spec.loader.exec_module(module)


_load_testkit()

ADMIN_URL = os.environ.get(
    "CONTINUAL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _admin_conninfo() -> dict[str, object]:
    from sqlalchemy.engine import make_url

    u = make_url(ADMIN_URL)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username,
        "password": u.password,
        "dbname": u.database or "postgres",
        "connect_timeout": 3,
    }


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of this session's PostgreSQL test database."""
    import psycopg
    from sqlalchemy.engine import make_url

    try:
        admin = psycopg.connect(**_admin_conninfo(), autocommit=True)
    except psycopg.Error as e:
        pytest.skip(
            f"no PostgreSQL server reachable at {make_url(ADMIN_URL).host}:"
            f"{make_url(ADMIN_URL).port or 5432} ({str(e).strip().splitlines()[0]}); "
            "start one or set CONTINUAL_TEST_PG_URL"
        )
    name = f"continual_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty(url: str) -> None:
    import psycopg

    info = {**_admin_conninfo(), "dbname": url.rsplit("/", 1)[1]}
    with psycopg.connect(**info, autocommit=True) as c:
        c.execute("DROP SCHEMA public CASCADE")
        c.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite at <workspace>/registry.db) or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("pg_database")
    _empty(url)
    return url


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def reg(workspace: Path, db_url: str | None) -> Iterator[Registry]:
    """A registry with no MLflow (the MLflow tests open their own)."""
    with Registry.open(workspace, url=db_url, tracker=NullTracker()) as r:
        yield r


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """This session's PostgreSQL test database, emptied."""
    _empty(pg_database)
    return pg_database


@pytest.fixture(scope="module")
def mlflow_db(pg_database: str) -> Iterator[str]:
    """A database of its own for MLflow's backend store, on the test PostgreSQL server."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"continual_mlflow_{secrets.token_hex(4)}"
    with psycopg.connect(**_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_database).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**_admin_conninfo(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
