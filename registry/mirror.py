"""Mirroring registry rows to the tracker (MLflow): one code path for new rows and catch-up.

Everything a run shows in MLflow is rebuilt from the database and the verified prefix file, so
`sync_mlflow` after an outage logs exactly what registration would have logged.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import TYPE_CHECKING, Any

from registry.records import EvaluationRecord, SyncReport
from registry.tracking import (
    NullTracker,
    Tracker,
    TrackingUnavailable,
    TrackingWarning,
    TrainingLog,
)
from registry.uow import UnitOfWork

if TYPE_CHECKING:
    from registry.ports import RegistryCore

_PARAM_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def log_prefix(reg: RegistryCore, prefix_id: int) -> str | None:
    """Log the prefix's training run to the tracker and keep the run id on its row."""

    def gather(uow: UnitOfWork) -> tuple[Any, ...]:
        p = uow.prefixes.get(prefix_id)
        assert p is not None
        task = uow.tasks.get(p.task)
        run = uow.runs.get(p.run_id) if p.run_id is not None else None
        evals = uow.evaluations.for_prefix(prefix_id)
        return p, task, run, uow.prefixes.losses(prefix_id), evals

    p, task, run, losses, evals = reg.db.read(gather)

    def current_now() -> int | None:
        def read(uow: UnitOfWork) -> int | None:
            found = uow.prefixes.current(task.id)
            return None if found is None else found.id

        return reg.db.read(read)

    data = reg.artifacts.read_verified(p.artifact_path, p.sha256)
    params = {
        "task": p.task,
        "kind": task.kind,
        "version": str(p.version),
        "data_fingerprint": task.data_fingerprint,
        "backbone": p.backbone_name,
        "backbone_fingerprint": p.backbone_fingerprint,
        "steps": str(p.train.steps),
        "n_trainable": str(p.train.n_trainable),
        "n_stored": str(p.n_stored),
        **_flat("prefix", p.config),
    }
    if run is not None:
        params |= {
            "seed": str(run.seed),
            **_flat("config", run.config),
            **_flat("package", run.packages),
        }
    metrics = [("train_seconds", p.train.seconds, 0)]
    if p.train.final_loss is not None:
        metrics.append(("final_loss", p.train.final_loss, 0))
    metrics += [(_metric_key(e), e.value, e.position or 0) for e in reversed(evals)]
    files = {
        "prefix.safetensors": data,
        "prefix_config.json": _json(p.config),
        "run.json": _json(run.to_dict() if run else {}),
    }
    found = (run.config.get("tune") if run is not None else None) or {}
    if found:  # a searched prefix: the best trial's options and what the search cost
        params |= {f"tune.best.{k}": str(v) for k, v in found["best"]["params"].items()}
        metrics.append(("search_steps", float(found["steps"]), 0))
        if found.get("refit_steps"):
            metrics.append(("search_refit_steps", float(found["refit_steps"]), 0))
    log = TrainingLog(
        task=p.task,
        version=p.version,
        prefix_id=p.id,
        current=p.is_current,
        params=params,
        tags={
            "continual.task": p.task,
            "continual.backbone_fingerprint": p.backbone_fingerprint,
            "continual.version": str(p.version),
            "continual.sha256": p.sha256,
            "continual.prefix_id": str(p.id),
        },
        losses=tuple(x for x in losses if x is not None),
        metrics=tuple(metrics),
        files=files,
        current_now=current_now,
        children=tuple(_trial(p.task, p.version, t) for t in found.get("trials", [])),
    )
    run_id = reg.tracker.log_training(log)
    if run_id:
        reg.db.write(lambda uow: uow.prefixes.set_mlflow_run(prefix_id, run_id))
    return run_id


def log_evaluation(reg: RegistryCore, record: EvaluationRecord, run_id: str) -> bool:
    """Log a later evaluation into its prefix's run, step = stream position; False on failure."""
    try:
        reg.tracker.log_metric(run_id, _metric_key(record), record.value, record.position or 0)
    except Exception as e:  # noqa: BLE001 - MLflow may fail in any way; the row stands
        warn(reg.tracker, f"evaluation id {record.id}", e)
        return False
    reg.db.write(lambda uow: uow.evaluations.set_mlflow_run(record.id, run_id))
    return True


def sync(reg: RegistryCore) -> SyncReport:
    """Mirror every prefix without an MLflow run, then every evaluation its run lacks."""
    if isinstance(reg.tracker, NullTracker):
        return SyncReport(tracking=reg.tracker.uri, synced=(), failed=())
    pending = reg.db.read(lambda uow: uow.prefixes.pending_mlflow())
    synced: list[int] = []
    failed: list[tuple[int, str]] = []
    for i, prefix_id in enumerate(pending):
        try:
            if log_prefix(reg, prefix_id):
                synced.append(prefix_id)
        except TrackingUnavailable as e:  # the rest would fail the same way
            failed += [(pid, str(e)) for pid in pending[i:]]
            break
        except Exception as e:  # noqa: BLE001
            failed.append((prefix_id, f"{type(e).__name__}: {first_line(e)}"))
    for record, run_id in reg.db.read(lambda uow: uow.evaluations.pending_mlflow()):
        if not log_evaluation(reg, record, run_id):
            break
    return SyncReport(tracking=reg.tracker.uri, synced=tuple(synced), failed=tuple(failed))


def warn(tracker: Tracker, what: str, error: BaseException) -> None:
    """One line on stderr (a warning): the tracker failed but the registry row stands."""
    warnings.warn(
        f"MLflow at {tracker.uri} failed for {what} ({type(error).__name__}: "
        f"{first_line(error)}); the registry keeps it without an MLflow run: run "
        "`continual registry sync-mlflow` later",
        TrackingWarning,
        stacklevel=4,
    )


def _metric_key(e: EvaluationRecord) -> str:
    return e.metric if e.method == "prefix" else f"{e.method}.{e.metric}"


def _trial(task: str, version: int, t: dict[str, Any]) -> dict[str, Any]:
    """One trial of a prefix's search as a nested run's content."""
    metrics = [("steps", float(t["steps"]), 0)]
    if t.get("value") is not None:
        metrics.append(("validation", float(t["value"]), 0))
    return {
        "name": f"{task}-v{version}-trial-{t['number']}",
        "params": {k: str(v) for k, v in t["params"].items()},
        "metrics": metrics,
        "tags": {"continual.task": task, "continual.trial": str(t["number"]), "state": t["state"]},
    }


def _flat(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    """Scalar entries of `d` as MLflow params `prefix.key` (nested values go in run.json)."""
    return {
        _PARAM_KEY.sub("_", f"{prefix}.{k}")[:250]: str(v)[:6000]
        for k, v in d.items()
        if isinstance(v, str | int | float | bool) or v is None
    }


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


def first_line(error: BaseException) -> str:
    """An error's first line (at most 300 characters; "" when it has no message)."""
    return (str(error).strip().splitlines() or [""])[0][:300]
