"""The prefix repository: versions, the current one, lineage and file references, over a
session the caller owns (see `registry.repository`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from registry import orm
from registry.records import LineageEdge, PrefixRecord, TrainSummary
from registry.repository import aware

_P = orm.Prefix
_PREFIX_COLUMNS = (_P, orm.Task.name, orm.Backbone.name, orm.Backbone.fingerprint)


class Prefixes:
    def __init__(self, session: Session) -> None:
        self.s = session

    def _select(self) -> Any:
        return (
            select(*_PREFIX_COLUMNS)
            .join(orm.Task, _P.task_id == orm.Task.id)
            .join(orm.Backbone, _P.backbone_id == orm.Backbone.id)
        )

    def next_version(self, task_id: int) -> int:
        latest = self.s.scalar(select(func.max(_P.version)).where(_P.task_id == task_id))
        return (latest or 0) + 1

    def add(
        self,
        *,
        task_id: int,
        version: int,
        lineage: Sequence[tuple[int, float, str]],
        **columns: Any,
    ) -> int:
        """Insert version `version` of the task as its current prefix, with its lineage."""
        self.s.execute(
            update(_P).where(_P.task_id == task_id, _P.is_current).values(is_current=False)
        )
        row = _P(task_id=task_id, version=version, is_current=True, status="ok", **columns)
        self.s.add(row)
        self.s.flush()
        for source_id, weight, method in lineage:
            self.s.add(
                orm.PrefixLineage(
                    prefix_id=row.id,
                    source_prefix_id=source_id,
                    weight=float(weight),
                    method=method,
                )
            )
        self.s.flush()
        return row.id

    def references(self, sha256: str) -> bool:
        """Whether a prefix row's file or optimizer state has this hash."""
        stmt = select(_P.id).where(or_(_P.sha256 == sha256, _P.optimizer_sha256 == sha256))
        return self.s.scalar(stmt.limit(1)) is not None

    def missing(self, ids: Iterable[int]) -> set[int]:
        wanted = set(ids)
        if not wanted:
            return set()
        return wanted - set(self.s.scalars(select(_P.id).where(_P.id.in_(wanted))))

    def get(self, prefix_id: int) -> PrefixRecord | None:
        found = self._records(self.s.execute(self._select().where(_P.id == prefix_id)).all())
        return found[0] if found else None

    def many(self, ids: Iterable[int]) -> dict[int, PrefixRecord]:
        """The prefixes with these ids (lineage included), in two queries."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = self.s.execute(self._select().where(_P.id.in_(wanted))).all()
        return {r.id: r for r in self._records(rows)}

    def current_of(self, task_ids: Iterable[int]) -> dict[int, PrefixRecord]:
        """The current prefix of each of these tasks (by task id), in two queries."""
        wanted = sorted(set(task_ids))
        if not wanted:
            return {}
        stmt = self._select().where(_P.task_id.in_(wanted), _P.is_current)
        rows = self.s.execute(stmt).all()
        return {r[0].task_id: rec for r, rec in zip(rows, self._records(rows))}

    def current(self, task_id: int) -> PrefixRecord | None:
        stmt = self._select().where(_P.task_id == task_id, _P.is_current)
        found = self._records(self.s.execute(stmt).all())
        return found[0] if found else None

    def version(self, task_id: int, version: int) -> PrefixRecord | None:
        stmt = self._select().where(_P.task_id == task_id, _P.version == version)
        found = self._records(self.s.execute(stmt).all())
        return found[0] if found else None

    def page(self, task_id: int | None, limit: int | None, offset: int) -> list[PrefixRecord]:
        """Prefixes newest first from `offset`: `limit` of them, or (None) all."""
        stmt = self._select()
        if task_id is not None:
            stmt = stmt.where(_P.task_id == task_id)
        stmt = stmt.order_by(_P.id.desc()).limit(limit).offset(offset)
        return self._records(self.s.execute(stmt).all())

    def count(self, task_id: int | None) -> int:
        """The prefixes of one task, or (None) of all."""
        stmt = select(func.count()).select_from(_P)
        if task_id is not None:
            stmt = stmt.where(_P.task_id == task_id)
        return self.s.scalar(stmt) or 0

    def losses(self, prefix_id: int) -> list[float]:
        return list(self.s.scalar(select(_P.losses).where(_P.id == prefix_id)) or [])

    def pending_mlflow(self) -> list[int]:
        stmt = select(_P.id).where(_P.mlflow_run_id.is_(None), _P.status == "ok").order_by(_P.id)
        return list(self.s.scalars(stmt))

    def mirrored(self) -> list[Row[Any]]:
        """(id, task, version, sha256, mlflow run id) of every row mirrored to MLflow."""
        stmt = (
            select(_P.id, orm.Task.name, _P.version, _P.sha256, _P.mlflow_run_id)
            .join(orm.Task, _P.task_id == orm.Task.id)
            .where(_P.mlflow_run_id.is_not(None))
            .order_by(_P.id)
        )
        return list(self.s.execute(stmt).all())

    def clear_mlflow_run(self, prefix_id: int, run_id: str) -> None:
        """Forget a run MLflow lost: the row and its evaluations are mirrored again later."""
        self.s.execute(
            update(_P)
            .where(_P.id == prefix_id, _P.mlflow_run_id == run_id)
            .values(mlflow_run_id=None)
        )
        self.s.execute(
            update(orm.Evaluation)
            .where(orm.Evaluation.mlflow_run_id == run_id)
            .values(mlflow_run_id=None)
        )

    def set_mlflow_run(self, prefix_id: int, run_id: str) -> None:
        self.s.execute(update(_P).where(_P.id == prefix_id).values(mlflow_run_id=run_id))
        self.s.execute(
            update(orm.Evaluation)
            .where(orm.Evaluation.prefix_id == prefix_id, orm.Evaluation.mlflow_run_id.is_(None))
            .values(mlflow_run_id=run_id)
        )

    def set_data(self, prefix_id: int, data_sha256: str) -> None:
        """Point a prefix registered before the data store existed at its stored data."""
        self.s.execute(
            update(_P)
            .where(_P.id == prefix_id, _P.data_sha256.is_(None))
            .values(data_sha256=data_sha256)
        )

    def set_status(self, ids: Iterable[int], status: str) -> None:
        ids = list(ids)
        if ids:
            self.s.execute(update(_P).where(_P.id.in_(ids)).values(status=status))

    def drop_optimizer(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            self.s.execute(
                update(_P).where(_P.id.in_(ids)).values(optimizer_path=None, optimizer_sha256=None)
            )

    def file_refs(self) -> list[Row[Any]]:
        """(id, task, version, status, path, sha256, optimizer_path, optimizer_sha256, store id)
        per row; the store id is the one the row's run recorded (`registry.integrity`), or None."""
        store_id = orm.Run.config[("artifact_store", "id")].as_string()
        stmt = (
            select(
                _P.id,
                orm.Task.name,
                _P.version,
                _P.status,
                _P.artifact_path,
                _P.sha256,
                _P.optimizer_path,
                _P.optimizer_sha256,
                store_id,
            )
            .join(orm.Task, _P.task_id == orm.Task.id)
            .outerjoin(orm.Run, _P.run_id == orm.Run.id)
            .order_by(_P.id)
        )
        return list(self.s.execute(stmt).all())

    def lineage(self, prefix_ids: Sequence[int]) -> list[LineageEdge]:
        """The direct sources of each prefix in `prefix_ids`."""
        if not prefix_ids:
            return []
        child, source, child_task, source_task = _LINEAGE_ALIASES
        L = orm.PrefixLineage
        stmt = (
            select(
                L.prefix_id,
                child_task.name,
                child.version,
                L.source_prefix_id,
                source_task.name,
                source.version,
                L.weight,
                L.method,
            )
            .join(child, L.prefix_id == child.id)
            .join(child_task, child.task_id == child_task.id)
            .join(source, L.source_prefix_id == source.id)
            .join(source_task, source.task_id == source_task.id)
            .where(L.prefix_id.in_(list(prefix_ids)))
            .order_by(L.prefix_id, L.weight.desc(), L.source_prefix_id)
        )
        return [
            LineageEdge(
                prefix_id=r[0],
                task=r[1],
                version=r[2],
                source_prefix_id=r[3],
                source_task=r[4],
                source_version=r[5],
                weight=r[6],
                method=r[7],
            )
            for r in self.s.execute(stmt)
        ]

    def _records(self, rows: Sequence[Row[Any]]) -> list[PrefixRecord]:
        edges: dict[int, list[LineageEdge]] = {}
        for e in self.lineage([r[0].id for r in rows]):
            edges.setdefault(e.prefix_id, []).append(e)
        return [_prefix(r[0], r[1], r[2], r[3], tuple(edges.get(r[0].id, ()))) for r in rows]


# Built once: aliases made anew per call cost ~4 ms of statement building per prefix read
# (SQLAlchemy adapts every column to each new alias), more than the query itself.
_LINEAGE_ALIASES = (
    aliased(orm.Prefix),
    aliased(orm.Prefix),
    aliased(orm.Task),
    aliased(orm.Task),
)


def _prefix(
    row: orm.Prefix, task: str, backbone: str, fingerprint: str, lineage: tuple[LineageEdge, ...]
) -> PrefixRecord:
    return PrefixRecord(
        id=row.id,
        task=task,
        version=row.version,
        is_current=row.is_current,
        status=row.status,
        backbone_name=backbone,
        backbone_fingerprint=fingerprint,
        config=row.config,
        artifact_path=row.artifact_path,
        sha256=row.sha256,
        n_bytes=row.n_bytes,
        n_stored=row.n_stored,
        train=TrainSummary(
            steps=row.train_steps,
            seconds=row.train_seconds,
            final_loss=row.final_loss,
            n_trainable=row.n_trainable,
        ),
        run_id=row.run_id,
        mlflow_run_id=row.mlflow_run_id,
        created_at=aware(row.created_at),
        optimizer_path=row.optimizer_path,
        optimizer_sha256=row.optimizer_sha256,
        lineage=lineage,
        kind=row.kind,
        data_sha256=row.data_sha256,
    )
