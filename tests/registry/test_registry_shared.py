"""Several workspaces sharing one registry database: `check --repair` in one never marks broken
a prefix whose file another workspace wrote (each workspace keeps its own artifact store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_testkit import FINGERPRINT, register
from sqlalchemy import update

from registry import NullTracker, Registry
from registry.integrity import STORE_KEY
from tasks.errors import IntegrityError


@pytest.fixture(params=["postgresql", "sqlite-url"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database two workspaces share: the test PostgreSQL, or a SQLite file named by URL."""
    if request.param == "sqlite-url":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    import psycopg
    from sqlalchemy.engine import make_url

    url = request.getfixturevalue("pg_database")  # tests/registry/conftest.py
    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True
    ) as c:
        c.execute("DROP SCHEMA public CASCADE")
        c.execute("CREATE SCHEMA public")
    return url


@pytest.fixture
def pair(tmp_path: Path, shared_url: str) -> Iterator[tuple[Registry, Registry]]:
    a = Registry.open(tmp_path / "ws-a", url=shared_url, tracker=NullTracker())
    b = Registry.open(tmp_path / "ws-b", url=shared_url, tracker=NullTracker())
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _forget_store(reg: Registry, run_id: int) -> None:
    """Make a run look registered before stores were recorded."""
    from registry import orm

    def write(uow):
        run = uow.session.get(orm.Run, run_id)
        config = {k: v for k, v in run.config.items() if k != STORE_KEY}
        uow.session.execute(update(orm.Run).where(orm.Run.id == run_id).values(config=config))

    reg.db.write(write)


def test_repair_leaves_another_workspaces_prefixes_alone(pair) -> None:
    a, b = pair
    in_a = register(a, "from-a", seed=1)
    in_b = register(b, "from-b", seed=2)
    assert not (b.workspace / in_a.artifact_path).exists()  # each store holds its own files

    for here, theirs in ((b, in_a), (a, in_b)):
        report = here.check(repair=True)
        assert report.ok and report.marked_broken == () and report.missing == ()
        assert report.elsewhere == (theirs.id,)
    assert a.prefix("from-a").status == b.prefix("from-b").status == "ok"
    assert a.load_prefix("from-a", FINGERPRINT)[1].id == in_a.id

    # B's own file goes missing: B finds and marks it; A neither reports nor restores it.
    (b.workspace / in_b.artifact_path).unlink()
    assert [p.prefix_id for p in a.check().missing] == []
    repaired = b.check(repair=True)
    assert [p.prefix_id for p in repaired.missing] == [in_b.id]
    assert repaired.marked_broken == (in_b.id,)
    assert a.check(repair=True).restored == ()
    assert a.prefix("from-b").status == "broken" and a.prefix("from-a").status == "ok"


def test_loading_anothers_prefix_says_where_its_file_is(pair) -> None:
    a, b = pair
    register(a, "from-a")
    with pytest.raises(IntegrityError, match=rf"its file is in workspace {a.workspace}"):
        b.load_prefix("from-a", FINGERPRINT)


def test_rows_that_recorded_no_store_are_judged_only_where_their_file_is(pair) -> None:
    a, b = pair
    old = register(a, "old", seed=3)
    _forget_store(a, old.run_id)
    gone = register(a, "gone", seed=4)
    _forget_store(a, gone.run_id)
    (a.workspace / gone.artifact_path).unlink()

    in_b = b.check(repair=True)  # neither file is in B's store: neither is B's to judge
    assert in_b.ok and in_b.marked_broken == () and set(in_b.elsewhere) == {old.id, gone.id}
    in_a = a.check(repair=True)  # "old" is in A's store and checked; "gone" can be anywhere
    assert in_a.elsewhere == (gone.id,) and in_a.ok and in_a.marked_broken == ()
    assert a.prefix("gone").status == "ok"


def test_a_workspaces_own_database_checks_every_row(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as reg:
        record = register(reg, "mine")
        _forget_store(reg, record.run_id)
        (reg.workspace / record.artifact_path).unlink()
        report = reg.check(repair=True)
        assert report.marked_broken == (record.id,) and report.elsewhere == ()


def test_the_store_id_is_made_once_and_kept(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as reg:
        assert reg.artifacts.store_id(create=False) is None
        made = reg.artifacts.store_id(create=True)
        assert made and reg.artifacts.store_id(create=True) == made
        record = register(reg, "mine")
        run = reg.run(record.run_id).config[STORE_KEY]
        assert run == {"id": made, "path": str(reg.workspace)}
        assert sorted(p.name for p in reg.workspace.iterdir() if p.name.startswith(".")) == []
