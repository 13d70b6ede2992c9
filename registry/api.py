"""The registry: one class over a workspace folder (artifacts, SQLite, MLflow) or a database URL.

    reg = Registry.open(Path("~/.continual"))
    record = reg.register_prefix(task=spec, ..., tensors={"prefix": p})
    tensors, record = reg.load_prefix("trec", expected_backbone_fingerprint=fp)

Writes land in the database first (the source of truth), the prefix file having been stored
atomically just before; MLflow is mirrored afterwards and may lag (`sync_mlflow`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import inputs, integrity, mirror, registration
from registry.batch_api import BatchReads
from registry.blobs import open_store
from registry.datastore import DataStore
from registry.exchange_api import Exchange
from registry.opening import default_tracker, open_database
from registry.queue import JobQueue
from registry.records import (
    BackboneRecord,
    EvaluationRecord,
    LineageEdge,
    PrefixRecord,
    RunRecord,
    TaskRecord,
    TaskView,
)
from registry.streams import StreamBook
from registry.streams_api import StreamRecords
from registry.tokens import TokenStore
from registry.tracking import Tracker
from registry.uow import Database, UnitOfWork
from tasks.errors import ConfigError, IntegrityError
from tasks.spec import TaskSpec, check_name

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_PAGE", "Registry", "default_tracker", "open_database"]

MAX_PAGE = 10_000
_LINEAGE_DEPTH = 64


class Registry(StreamRecords, BatchReads, Exchange):
    """Prefixes, their lineage and evaluations, in SQL; tensors as verified safetensors files."""

    def __init__(
        self, *, workspace: Path, database: Database, tracker: Tracker, store: str | None = None
    ) -> None:
        self.workspace = workspace
        self.db = database
        self.artifacts = open_store(workspace, store)  # the folder, or an fsspec URL
        self.tracker = tracker
        self.streams = StreamBook(database)  # named streams, arrivals, positioned scores
        self.queue = JobQueue(database)  # arrivals as jobs with leases
        self.data = DataStore(database, self.artifacts)  # task data, content-addressed
        self.tokens = TokenStore(database)  # the HTTP API's bearer tokens, as hashes

    @classmethod
    def open(
        cls,
        workspace: Path | str,
        url: str | None = None,
        tracking_uri: str | None = None,
        *,
        tracker: Tracker | None = None,
        migrate: bool = True,
        store: str | None = None,
    ) -> Registry:
        """Open (creating or migrating as needed) the registry of `workspace`.

        `url` selects the database (default: SQLite at `<workspace>/registry.db`);
        `tracking_uri` (else $MLFLOW_TRACKING_URI, else `sqlite:///<workspace>/mlflow.db`) the
        MLflow store, "none" for no tracking; `tracker` replaces MLflow altogether (tests).
        `migrate=False`: refuse (ConfigError) a database whose schema is behind (a worker).
        `store`: an fsspec URL for prefix files and data (`registry.blobs`; default the folder)."""
        ws, engine, _ = open_database(workspace, url, migrate_schema=migrate)
        return cls(
            workspace=ws,
            database=Database(engine),
            tracker=tracker or default_tracker(ws, tracking_uri),
            store=store,
        )

    def close(self) -> None:
        self.db.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.db.engine.url.render_as_string(hide_password=True)

    # ----------------------------------------------------------------------------------- writes

    def register_prefix(
        self,
        *,
        task: TaskSpec,
        data_fingerprint: str,
        backbone: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        prefix_config: dict[str, Any],
        train_summary: dict[str, Any],
        lineage: list[tuple[int, float, str]] | tuple[()] = (),
        run: dict[str, Any],
        evaluation: dict[str, Any] | None = None,
        optimizer_state: dict[str, torch.Tensor] | None = None,
        new_version: bool = False,
        embeddings: dict[str, Any] | None = None,
        kind: str = "prefix",
        data_sha256: str | None = None,
        stream: str | None = None,
        dataset: dict[str, Any] | None = None,
    ) -> PrefixRecord:
        """Store a trained prefix as the task's new current version; returns its record.

        `tensors["prefix"]` is [length, layers*2*kv_heads*head_dim] (see `inputs.prefix_config`),
        beside optional head tensors ("head.weight", ...). The dicts hold:
        backbone: name, source, fingerprint, n_params, config (extra keys ignored);
        prefix_config: length, layers, kv_heads, head_dim (+ hidden_size, positions, ... kept);
        train_summary: steps, seconds, final_loss, losses (one per step), optional n_trainable;
        run: seed, config, packages, backbone_fingerprint (must equal the backbone's);
        evaluation: metric, value, n, optional predictions_sha256 and position;
        lineage: (source_prefix_id, weight, method) per source;
        embeddings: {method: vector or [rows, dim] matrix}, stored with the prefix in the same
        unit of work (so a refused or killed registration leaves none behind).
        `kind` is the per-task module's registered kind; `data_sha256` the stored data
        (`reg.data.put`) it was trained and evaluated on, or `dataset` (a `reg.data.stage` row
        whose file is stored) its row, committed with the prefix. An evaluation with a position is the
        task's arrival in `stream` (`default` unless named): the arrival row (running) is
        written in the same unit of work, so the stream position is taken exactly when the
        prefix exists.
        A task already in the registry needs `new_version=True` and the same kind. The file is
        written (atomically) before the row is committed; MLflow is mirrored after, and a failure
        there only warns (TrackingWarning) and leaves `mlflow_run_id` None.
        """
        record = registration.store(
            self,
            task=task,
            data_fingerprint=data_fingerprint,
            backbone=backbone,
            tensors=tensors,
            prefix_config=prefix_config,
            train_summary=train_summary,
            lineage=lineage,
            run=run,
            evaluation=evaluation,
            optimizer_state=optimizer_state,
            embeddings=embeddings,
            new_version=new_version,
            kind=kind,
            data_sha256=data_sha256,
            stream=stream,
            dataset=dataset,
        )
        run_id = self._mirror(record.id)
        return replace(record, mlflow_run_id=run_id) if run_id else record

    def record_evaluation(
        self,
        *,
        task: str,
        metric: str,
        value: float,
        n: int,
        prefix_id: int | None = None,
        position: int | None = None,
        method: str = "prefix",
        predictions_sha256: str | None = None,
        stream: str | None = None,
    ) -> EvaluationRecord:
        """Store one score of `task`. With method 'prefix' and no `prefix_id`, the score is of
        the task's current prefix; baselines pass their own method name and no prefix.

        A score at a `position` belongs to a stream (`default` unless named) and is recorded
        once: recording it again returns the row already there, unchanged."""
        check_name(task)
        stream, ev = inputs.scored(
            task, method, stream, metric=metric, value=value, n=n, position=position,
            predictions_sha256=predictions_sha256,
        )  # fmt: skip

        def write(uow: UnitOfWork) -> tuple[EvaluationRecord, str | None]:
            t = uow.tasks.get(task)
            pid, run_id = prefix_id, None
            if pid is None and method == "prefix":
                current = uow.prefixes.current(t.id)
                if current is None:
                    raise ConfigError(f"task {task} has no prefix to evaluate; train it first")
                pid = current.id
            if pid is not None:
                p = uow.prefixes.get(pid)
                if p is None or p.task != task:
                    raise ConfigError(f"prefix id {pid} is not a prefix of task {task}")
                run_id = p.mlflow_run_id
            sid = None if stream is None else uow.streams.ensure(stream)
            eid = uow.evaluations.add(
                task_id=t.id, prefix_id=pid, method=method, stream_id=sid, **ev
            )
            return uow.evaluations.get(eid), run_id

        record, run_id = self.db.write(write, retry_conflicts=True)
        if record.mlflow_run_id:  # recorded (and mirrored) by an earlier attempt
            return record
        if run_id and mirror.log_evaluation(self, record, run_id):
            record = replace(record, mlflow_run_id=run_id)
        return record

    # ---------------------------------------------------------------------------------- queries

    def tasks(self, limit: int | None = None, offset: int = 0) -> list[TaskRecord]:
        """Tasks in order of arrival: `limit` of them from `offset`, or (None) all of them."""
        _page(limit, offset)
        return self.db.read(lambda uow: uow.tasks.page(limit, offset))

    def count_tasks(self) -> int:
        return self.db.read(lambda uow: uow.tasks.count())

    def prefixes(
        self, task: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[PrefixRecord]:
        """Prefixes, newest first, of one task or of all: `limit` from `offset`, or (None) all."""
        _page(limit, offset)

        def read(uow: UnitOfWork) -> list[PrefixRecord]:
            task_id = None if task is None else uow.tasks.get(check_name(task)).id
            return uow.prefixes.page(task_id, limit, offset)

        return self.db.read(read)

    def count_prefixes(self, task: str | None = None) -> int:
        """How many prefix versions one task (or, None, the registry) holds."""

        def read(uow: UnitOfWork) -> int:
            return uow.prefixes.count(None if task is None else uow.tasks.get(check_name(task)).id)

        return self.db.read(read)

    def prefix(self, ref: str | int, version: int | None = None) -> PrefixRecord:
        """A prefix by id, or by task name (its current prefix, or `version`)."""
        return self.db.read(lambda uow: _resolve(uow, ref, version))

    def backbone(self, fingerprint: str) -> BackboneRecord:
        """The backbone with this fingerprint, as first registered (name, source, config)."""
        found = self.db.read(lambda uow: uow.backbones.get(fingerprint))
        if found is None:
            raise ConfigError(f"no backbone with fingerprint {fingerprint} in the registry")
        return found

    def backbones_in_use(self) -> list[BackboneRecord]:
        """The backbones the tasks' current prefixes were trained on (one query, no paging)."""
        return self.db.read(lambda uow: uow.backbones.in_use())

    def run(self, run_id: int) -> RunRecord:
        found = self.db.read(lambda uow: uow.runs.get(run_id))
        if found is None:
            raise ConfigError(f"run id {run_id} is not in the registry")
        return found

    def has_task(self, task: str) -> bool:
        """Whether a task of this name is registered (one lookup; no view is built); a new
        name that differs from a registered one only in case is refused (ConfigError)."""

        return self.db.read(
            lambda uow: uow.tasks.find(task) is not None or uow.tasks.refuse_twin(task)
        )

    def show(self, task: str) -> TaskView:
        """The task, its current prefix, that prefix's latest score per metric, its lineage."""
        check_name(task)

        def read(uow: UnitOfWork) -> TaskView:
            t = uow.tasks.get(task)
            current = uow.prefixes.current(t.id)
            latest = uow.evaluations.latest_for_prefix(current.id) if current is not None else []
            return TaskView(
                task=t,
                current=current,
                versions=uow.prefixes.count(t.id),
                metrics=tuple(latest),
                lineage=current.lineage if current else (),
                mlflow_run_id=current.mlflow_run_id if current else None,
            )

        return self.db.read(read)

    def history(self, task: str) -> list[EvaluationRecord]:
        """Every evaluation of the task, oldest first (all methods, all prefix versions)."""
        check_name(task)
        return self.db.read(lambda uow: uow.evaluations.history(uow.tasks.get(task).id))

    def lineage(self, task: str, version: int | None = None) -> list[LineageEdge]:
        """The ancestry of the task's current prefix (or `version`): direct sources at depth 1,
        their sources at depth 2, and so on."""
        check_name(task)

        def read(uow: UnitOfWork) -> list[LineageEdge]:
            frontier, seen, out = [_resolve(uow, task, version).id], set[int](), []
            for depth in range(1, _LINEAGE_DEPTH + 1):
                seen.update(frontier)
                edges = uow.prefixes.lineage(frontier)
                out += [replace(e, depth=depth) for e in edges]
                frontier = sorted({e.source_prefix_id for e in edges} - seen)
                if not frontier:
                    break
            return out

        return self.db.read(read)

    # ------------------------------------------------------------------------- tensors, files

    def load_prefix(
        self, ref: str | int, expected_backbone_fingerprint: str, *, version: int | None = None
    ) -> tuple[dict[str, torch.Tensor], PrefixRecord]:
        """The prefix's tensors (hash-verified) and record. Refuses, with IntegrityError, a
        prefix trained on another backbone, a broken one, or a file that fails its sha256."""
        record = self.prefix(ref, version)
        where = f"prefix {record.task} v{record.version} (id {record.id})"
        if record.status != "ok":
            raise IntegrityError(
                f"{where} is marked {record.status} by `continual registry check "
                "--repair`; retrain it with --new-version or import it again"
            )
        if record.backbone_fingerprint != expected_backbone_fingerprint:
            raise IntegrityError(
                f"{where} was trained on backbone {record.backbone_name} with fingerprint "
                f"{record.backbone_fingerprint}, not {expected_backbone_fingerprint}; load the "
                "matching backbone or retrain the task with --new-version"
            )
        if self.artifacts.hash_of(record.artifact_path) is None:
            self._elsewhere(record, where)
        return self.artifacts.load_tensors(record.artifact_path, record.sha256), record

    def _elsewhere(self, record: PrefixRecord, where: str) -> None:
        """Refuse, saying where it is, a prefix whose file another workspace sharing this
        database wrote (`check --repair` here would rightly leave it alone)."""
        run = self.run(record.run_id).config if record.run_id is not None else {}
        store = integrity.writer(run)
        if store is not None and store["id"] != self.artifacts.store_id(create=False):
            raise IntegrityError(
                f"{where}: its file is in workspace {store.get('path')} (which shares this "
                f"registry database), not in {self.workspace}; use that workspace, or "
                "`continual registry export` it there and `registry import` it here"
            )

    def load_optimizer_state(
        self, ref: str | int, *, version: int | None = None
    ) -> dict[str, torch.Tensor] | None:
        """The stored optimizer state for resuming, hash-verified; None if none was stored."""
        record = self.prefix(ref, version)
        if record.optimizer_path is None or record.optimizer_sha256 is None:
            return None
        return self.artifacts.load_tensors(record.optimizer_path, record.optimizer_sha256)

    def _mirror(self, prefix_id: int) -> str | None:
        try:
            return mirror.log_prefix(self, prefix_id)
        except Exception as e:  # noqa: BLE001 - MLflow may fail in any way; the row stands
            mirror.warn(self.tracker, f"prefix id {prefix_id}", e)
            return None


def _page(limit: int | None, offset: int) -> None:
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE
    ):
        raise ConfigError(f"--limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ConfigError(f"--offset must be 0 or more, got {offset!r}")


def _resolve(uow: UnitOfWork, ref: str | int, version: int | None) -> PrefixRecord:
    if isinstance(ref, int) and not isinstance(ref, bool):
        found = uow.prefixes.get(ref)
        if found is None:
            raise ConfigError(f"prefix id {ref} is not in the registry")
        return found
    t = uow.tasks.get(check_name(ref))
    found = uow.prefixes.current(t.id) if version is None else uow.prefixes.version(t.id, version)
    if found is None:
        which = "a current prefix" if version is None else f"a version {version}"
        raise ConfigError(
            f"task {ref} has no {which} in the registry; "
            f"`continual registry prefixes --task {ref}` lists its versions"
        )
    return found
