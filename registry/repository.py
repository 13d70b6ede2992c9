"""Repositories: every query and write of the registry, over a session the caller owns.

They never commit (the unit of work does) and hand out frozen records, never ORM rows. Values
only ever reach SQL as bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from registry import orm
from registry.records import (
    BackboneRecord,
    RunRecord,
    TaskRecord,
    TokenRecord,
)
from tasks.errors import ConfigError


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


class Backbones:
    def __init__(self, session: Session) -> None:
        self.s = session

    def ensure(self, b: BackboneRecord) -> int:
        """The id of the backbone with `b.fingerprint`, inserting it if new (first one wins)."""
        found = self.s.scalar(
            select(orm.Backbone.id).where(orm.Backbone.fingerprint == b.fingerprint)
        )
        if found is not None:
            return found
        row = orm.Backbone(
            name=b.name,
            source=b.source,
            fingerprint=b.fingerprint,
            n_params=b.n_params,
            config=b.config,
        )
        self.s.add(row)
        self.s.flush()
        return row.id

    def get(self, fingerprint: str) -> BackboneRecord | None:
        row = self.s.scalar(select(orm.Backbone).where(orm.Backbone.fingerprint == fingerprint))
        return None if row is None else _backbone(row)

    def in_use(self) -> list[BackboneRecord]:
        """The backbones of the tasks' current prefixes, oldest first."""
        used = select(orm.Prefix.backbone_id).where(orm.Prefix.is_current)
        stmt = select(orm.Backbone).where(orm.Backbone.id.in_(used)).order_by(orm.Backbone.id)
        return [_backbone(r) for r in self.s.scalars(stmt)]


class Tasks:
    def __init__(self, session: Session) -> None:
        self.s = session

    def named(self, names: Iterable[str]) -> dict[str, TaskRecord]:
        """The tasks with these names, in one query."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        rows = self.s.scalars(select(orm.Task).where(orm.Task.name.in_(wanted)))
        return {r.name: _task(r) for r in rows}

    def find(self, name: str) -> TaskRecord | None:
        row = self.s.scalar(select(orm.Task).where(orm.Task.name == name))
        return None if row is None else _task(row)

    def refuse_twin(self, name: str) -> bool:
        """Refuse a new task whose name differs from a registered one only in case: names
        become folder names and URL paths, where `T1` and `t1` are easily the same thing.
        Returns False (no twin), so a lookup can end `found or refuse_twin(name)`."""
        twin = self.s.scalar(
            select(orm.Task.name).where(
                func.lower(orm.Task.name) == name.lower(), orm.Task.name != name
            )
        )
        if twin is not None:
            raise ConfigError(
                f"task name {name} differs from the registered task {twin} only in case; "
                f"use {twin} (as a new version) or another name"
            )
        return False

    def get(self, name: str) -> TaskRecord:
        found = self.find(name)
        if found is None:
            raise ConfigError(
                f"task {name!r} is not in the registry; `continual registry tasks` lists them"
            )
        return found

    def save(
        self, *, name: str, kind: str, spec: dict[str, Any], data_fingerprint: str, description: str
    ) -> int:
        """Insert the task, or update its spec, data fingerprint and description."""
        row = self.s.scalar(select(orm.Task).where(orm.Task.name == name))
        if row is None:
            self.refuse_twin(name)
            row = orm.Task(
                name=name,
                kind=kind,
                spec=spec,
                data_fingerprint=data_fingerprint,
                description=description,
            )
            self.s.add(row)
        else:
            row.spec, row.data_fingerprint, row.description = spec, data_fingerprint, description
        self.s.flush()
        return row.id

    def page(self, limit: int | None, offset: int) -> list[TaskRecord]:
        """Tasks by id from `offset`: `limit` of them, or (None) all, in one statement."""
        rows = self.s.scalars(select(orm.Task).order_by(orm.Task.id).limit(limit).offset(offset))
        return [_task(r) for r in rows]

    def count(self) -> int:
        return self.s.scalar(select(func.count()).select_from(orm.Task)) or 0


class Runs:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        seed: int,
        config: dict[str, Any],
        packages: dict[str, Any],
        backbone_fingerprint: str,
    ) -> int:
        row = orm.Run(
            seed=seed, config=config, packages=packages, backbone_fingerprint=backbone_fingerprint
        )
        self.s.add(row)
        self.s.flush()
        return row.id

    def get(self, run_id: int) -> RunRecord | None:
        row = self.s.get(orm.Run, run_id)
        return None if row is None else _run(row)

    def many(self, ids: Iterable[int]) -> dict[int, RunRecord]:
        """The runs with these ids, in one query."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = self.s.scalars(select(orm.Run).where(orm.Run.id.in_(wanted)))
        return {r.id: _run(r) for r in rows}


def _run(row: orm.Run) -> RunRecord:
    return RunRecord(
        id=row.id,
        seed=row.seed,
        config=row.config,
        packages=row.packages,
        backbone_fingerprint=row.backbone_fingerprint,
        created_at=aware(row.created_at),
    )


def _backbone(row: orm.Backbone) -> BackboneRecord:
    return BackboneRecord(
        id=row.id,
        name=row.name,
        source=row.source,
        fingerprint=row.fingerprint,
        n_params=row.n_params,
        config=row.config,
        created_at=aware(row.created_at),
    )


def _task(row: orm.Task) -> TaskRecord:
    return TaskRecord(
        id=row.id,
        name=row.name,
        kind=row.kind,
        spec=row.spec,
        data_fingerprint=row.data_fingerprint,
        description=row.description,
        created_at=aware(row.created_at),
    )


class Tokens:
    """The `tokens` table, inside a unit of work."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, *, name: str, scope: str, sha256: str) -> int:
        row = orm.Token(name=name, scope=scope, sha256=sha256, created_at=orm.utcnow())
        self.s.add(row)
        self.s.flush()
        return row.id

    def by_hash(self, sha256: str) -> TokenRecord | None:
        row = self.s.scalars(select(orm.Token).where(orm.Token.sha256 == sha256)).first()
        return None if row is None else _token(row)

    def all(self) -> list[TokenRecord]:
        return [_token(r) for r in self.s.scalars(select(orm.Token).order_by(orm.Token.id))]

    def active(self) -> int:
        stmt = select(func.count()).select_from(orm.Token).where(orm.Token.revoked_at.is_(None))
        return int(self.s.scalar(stmt) or 0)

    def revoke(self, token_id: int) -> bool:
        result = self.s.execute(
            update(orm.Token)
            .where(orm.Token.id == token_id, orm.Token.revoked_at.is_(None))
            .values(revoked_at=orm.utcnow())
        )
        return result.rowcount == 1


def _token(row: orm.Token) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        name=row.name,
        scope=row.scope,
        created_at=aware(row.created_at),
        revoked_at=aware(row.revoked_at),
    )
