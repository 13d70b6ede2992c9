"""The unit of work commits only when told to, and retries what is worth retrying."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import exc as sa_exc

from registry import Registry
from registry.uow import UnitOfWork, transact


def _add_task(uow: UnitOfWork, name: str) -> int:
    return uow.tasks.save(
        name=name, kind="classification", spec={}, data_fingerprint="d", description=""
    )


def test_leaving_without_commit_rolls_back(reg: Registry) -> None:
    with UnitOfWork(reg.db.writes) as uow:
        _add_task(uow, "forgotten")
    with UnitOfWork(reg.db.writes) as uow:
        _add_task(uow, "kept")
        uow.commit()
    with pytest.raises(RuntimeError), UnitOfWork(reg.db.writes) as uow:
        _add_task(uow, "failed")
        raise RuntimeError("boom")
    assert [t.name for t in reg.tasks()] == ["kept"]


def test_transient_errors_are_retried(reg: Registry) -> None:
    calls = []

    def flaky(uow: UnitOfWork) -> int:
        calls.append(1)
        if len(calls) < 3:
            raise sa_exc.OperationalError(
                "BEGIN", {}, sqlite3.OperationalError("database is locked")
            )
        return _add_task(uow, "eventually")

    assert transact(reg.db.writes, flaky, commit=True) > 0
    assert len(calls) == 3 and [t.name for t in reg.tasks()] == ["eventually"]


def test_only_unique_races_are_retried(reg: Registry) -> None:
    calls = []

    def broken(uow: UnitOfWork) -> None:
        calls.append(1)
        raise sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("CHECK constraint failed"))

    with pytest.raises(sa_exc.IntegrityError):
        transact(reg.db.writes, broken, commit=True, retry_conflicts=True)
    assert len(calls) == 1

    def missing_table(uow: UnitOfWork) -> None:
        calls.append(1)
        raise sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table"))

    with pytest.raises(sa_exc.OperationalError):
        transact(reg.db.writes, missing_table, commit=True)
    assert len(calls) == 2
