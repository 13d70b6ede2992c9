"""Real processes at the same moment: registrations all land with no lock error reaching the
user, version numbers stay unique with exactly one current prefix per task, and an empty
database opened by two processes at once is migrated once."""

from __future__ import annotations

from pathlib import Path

from registry_testkit import PER_WORKER, race, register

from registry import NullTracker, Registry


def test_two_processes_register_at_once(reg: Registry, db_url: str | None) -> None:
    register(reg, "shared")
    assert [len(ids) for ids in race(reg.workspace, db_url)] == [2 * PER_WORKER] * 2
    names = {t.name for t in reg.tasks()}
    assert names == {"shared"} | {f"{w}-{i}" for w in ("alpha", "beta") for i in range(PER_WORKER)}
    shared = reg.prefixes(task="shared")
    assert sorted(p.version for p in shared) == list(range(1, 2 * PER_WORKER + 2))
    assert [p.version for p in shared if p.is_current] == [2 * PER_WORKER + 1]
    assert reg.check().ok


def test_two_processes_open_an_empty_database_at_once(workspace: Path, db_url: str | None) -> None:
    assert [len(ids) for ids in race(workspace, db_url, "late")] == [PER_WORKER] * 2
    with Registry.open(workspace, url=db_url, tracker=NullTracker()) as reg:
        assert len(reg.tasks()) == 2 * PER_WORKER
