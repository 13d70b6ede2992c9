"""Experiment tracking behind a small protocol: MLflow, or nothing.

The registry's database is the source of truth; MLflow is a mirror for browsing runs. A tracker
may fail (server down, store locked): the registry then keeps the row with `mlflow_run_id` NULL
and `Registry.sync_mlflow()` catches up later. `MlflowTracker` imports mlflow and creates its
store only on first use, so opening the registry for a query never pays for MLflow.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

EXPERIMENT = "continual"
CURRENT_ALIAS = "current"
PREFIX_ARTIFACTS = "prefix"
_METRICS_PER_BATCH, _PARAMS_PER_BATCH = 1000, 100  # MLflow's log_batch limits


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


class TrackingWarning(RuntimeWarning):
    """The tracker failed; the registry row stands and `sync_mlflow` will catch up."""


@dataclass(frozen=True)
class TrainingLog:
    """What one training run sends to the tracker.

    `files` maps artifact file names to their bytes (the prefix safetensors file, its config);
    `losses` is the training loss per step; `metrics` are (key, value, step) triples; `current`
    says whether this prefix version is its task's current one (it then gets the registered-model
    alias `current`). `current_now`, if given, reads the task's current prefix id from the
    registry at the moment it is called: several workers mirroring versions of one task at once
    may finish in any order, so the alias is pointed at what the registry says, not at the last
    version mirrored.
    """

    task: str
    version: int
    prefix_id: int
    current: bool
    params: dict[str, str]
    tags: dict[str, str]
    losses: tuple[float, ...]
    metrics: tuple[tuple[str, float, int], ...]
    files: dict[str, bytes] = field(default_factory=dict)
    current_now: Callable[[], int | None] | None = None
    # nested runs under this one (a search's trials): name, params, metrics, tags each
    children: tuple[dict[str, Any], ...] = ()


class Tracker(Protocol):
    """Where training runs are mirrored. Methods may raise; the registry survives it."""

    @property
    def uri(self) -> str: ...

    def log_training(self, log: TrainingLog) -> str | None:
        """Log a run (params, loss per step, metrics, files, tags) and register the prefix as a
        model version; returns the run id, or None if this tracker keeps nothing."""
        ...

    def log_metric(self, run_id: str, key: str, value: float, step: int) -> None: ...


class NullTracker:
    """Tracks nothing; every prefix keeps `mlflow_run_id` NULL."""

    uri = "none"

    def log_training(self, log: TrainingLog) -> str | None:
        return None

    def log_metric(self, run_id: str, key: str, value: float, step: int) -> None:
        return None


class MlflowTracker:
    """MLflow through `MlflowClient` with explicit run ids (never the fluent global API).

    `artifact_location` is where a newly created experiment keeps artifacts (the workspace's
    `mlartifacts/` for the default local store; None lets a server decide).
    """

    def __init__(self, *, tracking_uri: str, artifact_location: str | None = None) -> None:
        self._uri = tracking_uri
        self._artifact_location = artifact_location
        self._client: Any = None
        self._experiment_id: str | None = None

    @property
    def uri(self) -> str:
        return self._uri

    def log_training(self, log: TrainingLog) -> str | None:
        from mlflow.entities import Metric, Param

        client = self._connect()
        done = self._earlier(client, log)
        if done is not None:
            return done
        run = client.create_run(self._experiment(), tags=log.tags, run_name=_run_name(log))
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            params = [Param(k, v[:6000]) for k, v in sorted(log.params.items())]
            metrics = [Metric("loss", float(x), now, step) for step, x in enumerate(log.losses)]
            metrics += [Metric(k, float(v), now, step) for k, v, step in log.metrics]
            for i in range(0, len(params), _PARAMS_PER_BATCH):
                client.log_batch(run_id, params=params[i : i + _PARAMS_PER_BATCH])
            for i in range(0, len(metrics), _METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=metrics[i : i + _METRICS_PER_BATCH])
            _log_files(client, run_id, log.files)
            self._register(client, log, run_id, f"{run.info.artifact_uri}/{PREFIX_ARTIFACTS}")
            for child in log.children:
                self._child(client, run_id, child, now)
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error
                client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id)
        return run_id

    def log_metric(self, run_id: str, key: str, value: float, step: int) -> None:
        self._connect().log_metric(run_id, key, float(value), step=step)

    def stored_copy(self, run_id: str, name: str) -> tuple[str, str | None, bytes | None]:
        """What MLflow holds for a run: ('ok' | 'gone' | 'deleted', its `continual.sha256` tag,
        the bytes of artifact `prefix/<name>` or None when it is missing). A store that cannot
        be read at all raises."""
        from mlflow.exceptions import MlflowException

        client = self._connect()
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return "gone", None, None
            raise
        state = "deleted" if run.info.lifecycle_stage == "deleted" else "ok"
        tag = run.data.tags.get("continual.sha256")
        with tempfile.TemporaryDirectory(prefix="continual-mlflow-") as tmp, _quiet_downloads():
            try:
                got = client.download_artifacts(run_id, f"{PREFIX_ARTIFACTS}/{name}", tmp)
            except (OSError, MlflowException):
                return state, tag, None
            return state, tag, Path(got).read_bytes()

    def restore_copy(self, run_id: str, files: dict[str, bytes], sha256: str) -> None:
        """Log `files` into the run's `prefix/` artifacts again (replacing damaged copies) and
        set its `continual.sha256` tag."""
        client = self._connect()
        _log_files(client, run_id, files)
        client.set_tag(run_id, "continual.sha256", sha256)

    def drop_versions(self, task: str, run_id: str) -> None:
        """Delete the model versions made from a run (before the run is mirrored anew)."""
        client = self._connect()
        for v in client.search_model_versions(f"name='{task}'"):
            if v.run_id == run_id:
                client.delete_model_version(task, v.version)

    def _earlier(self, client: Any, log: TrainingLog) -> str | None:
        """A run an earlier attempt made for this same prefix (a process killed, or MLflow
        lost, before the registry recorded the run id): a finished one whose model version
        exists is the mirror, returned as is; an unfinished one is deleted with any model
        version it made, so that retrying never leaves two runs or versions for one prefix."""
        from mlflow.entities import ViewType

        sha, pid = log.tags.get("continual.sha256"), log.tags.get("continual.prefix_id")
        if not sha or not pid:
            return None
        found = client.search_runs(
            [self._experiment()],
            filter_string=f"tags.`continual.sha256` = '{sha}' and tags.`continual.prefix_id` = '{pid}'",
            run_view_type=ViewType.ACTIVE_ONLY,
        )
        for run in found:
            if run.info.status == "FINISHED" and _version_of(client, log, log.prefix_id):
                return str(run.info.run_id)
        dead = {run.info.run_id for run in found}
        if dead:
            for v in client.search_model_versions(f"name='{log.task}'"):
                if v.run_id in dead:
                    client.delete_model_version(log.task, v.version)
        for run_id in dead:
            client.delete_run(run_id)
        return None

    def _child(self, client: Any, parent: str, child: dict[str, Any], now: int) -> None:
        from mlflow.entities import Metric, Param

        tags = {**child.get("tags", {}), "mlflow.parentRunId": parent}
        run = client.create_run(self._experiment(), tags=tags, run_name=child["name"])
        client.log_batch(
            run.info.run_id,
            params=[Param(k, v[:6000]) for k, v in sorted(child["params"].items())],
            metrics=[Metric(k, float(v), now, step) for k, v, step in child["metrics"]],
        )
        client.set_terminated(run.info.run_id)

    def _register(self, client: Any, log: TrainingLog, run_id: str, source: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(log.task)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = {"prefix_id": str(log.prefix_id), "prefix_version": str(log.version)}
        mv = client.create_model_version(log.task, source=source, run_id=run_id, tags=tags)
        if log.current_now is None:
            if log.current:
                client.set_registered_model_alias(log.task, CURRENT_ALIAS, mv.version)
            return
        # Point the alias at the registry's current prefix, then look again: if another worker
        # made a newer version current meanwhile, follow it (its own mirror does the same, so
        # whichever finishes last leaves the alias right). A version not mirrored yet is left to
        # its own mirror.
        for _ in range(5):
            current = log.current_now()
            if current is None:
                return
            version = mv.version if current == log.prefix_id else _version_of(client, log, current)
            if version is None:
                return
            client.set_registered_model_alias(log.task, CURRENT_ALIAS, version)
            if log.current_now() == current:
                return

    def _connect(self) -> Any:
        if self._client is None:
            _probe(self._uri)
            _create_sqlite_store_atomically(self._uri)
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        return self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            client = self._connect()
            found = client.get_experiment_by_name(EXPERIMENT)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                self._experiment_id = client.create_experiment(
                    EXPERIMENT, artifact_location=self._artifact_location
                )
        return self._experiment_id


def _log_files(client: Any, run_id: str, files: dict[str, bytes]) -> None:
    """Log `files` (name -> bytes) as the run's `prefix/` artifacts (replacing any there)."""
    with tempfile.TemporaryDirectory(prefix="continual-mlflow-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        client.log_artifacts(run_id, tmp, artifact_path=PREFIX_ARTIFACTS)


@contextlib.contextmanager
def _quiet_downloads() -> Any:
    """No MLflow progress bar per file read back (a check reads one per prefix)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _version_of(client: Any, log: TrainingLog, prefix_id: int) -> str | None:
    """The registered model version of `prefix_id` (tagged with it), if it was mirrored."""
    for v in client.search_model_versions(f"name='{log.task}'"):
        if v.tags.get("prefix_id") == str(prefix_id):
            return str(v.version)
    return None


def _run_name(log: TrainingLog) -> str:
    return f"{log.task}-v{log.version}"


def _probe(uri: str, timeout_s: float = 2.0) -> None:
    """Fail fast on an unreachable HTTP server instead of sitting in MLflow's retry backoff."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s).close()
    except OSError as e:
        raise TrackingUnavailable(f"MLflow server {uri} is unreachable: {e}") from None


def _create_sqlite_store_atomically(uri: str) -> None:
    """Create a new SQLite MLflow store under a temporary name and link it into place.

    MLflow builds its schema in many steps; a process killed midway would otherwise leave a
    half-migrated `mlflow.db` that fails forever after. `os.link` refuses an existing target,
    so of two processes racing here one store wins and nobody's runs are overwritten.
    """
    if not uri.startswith("sqlite:///"):
        return
    final = Path(uri[len("sqlite:///") :])
    if final.exists():
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}", registry_uri=f"sqlite:///{tmp}")
        client.search_experiments(max_results=1)  # builds the tracking schema
        client.search_registered_models(max_results=1)  # and the model registry's
        with contextlib.suppress(FileExistsError):
            os.link(tmp, final)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
