"""Workers migrate nothing: `continual worker` on a registry whose schema is behind (or empty)
refuses with one line naming the fix; `continual registry upgrade` brings it to head once."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from registry import Registry, migrate
from registry.db import make_engine, resolve_url
from tests.pipelines.test_stream_run import run


def _downgrade(home: Path, revision: str) -> None:
    engine = make_engine(resolve_url(home.resolve(), None))
    try:
        with engine.begin() as connection:
            command.downgrade(migrate.alembic_config(connection), revision)
        assert migrate.current(engine) == revision
    finally:
        engine.dispose()


def test_a_worker_refuses_a_schema_behind_and_upgrade_fixes_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, _, err = run("worker", "--until-empty", "--home", home)
    assert code != 0
    assert err[-1].count("\n") == 0 and "none (empty)" in err[-1]
    assert "continual registry upgrade" in err[-1]

    Registry.open(home, tracking_uri="none").close()  # head
    _downgrade(home, "0003")
    code, _, err = run("worker", "--until-empty", "--home", home)
    assert code != 0 and "schema revision 0003" in err[-1] and migrate.head() in err[-1]
    assert migrate.current(make_engine(resolve_url(home.resolve(), None))) == "0003"  # untouched

    code, out, _ = run("registry", "upgrade", "--home", home)
    assert code == 0 and out["before"] == "0003" and out["after"] == migrate.head()
    code, out, err = run("worker", "--until-empty", "--home", home)
    assert code == 0, err
    assert out["jobs"] == []
