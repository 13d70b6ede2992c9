"""`registry check --mlflow`: the MLflow mirror against the registry.

MLflow keeps no checksum of the artifacts it stores, so a flipped byte in its copy of a prefix
would be handed silently to whoever downloads that run or model version. For every prefix row
with an MLflow run, this reads the run back and checks that it exists and is not deleted, that
its `continual.sha256` tag is the row's, and that its `prefix/prefix.safetensors` hashes to it.

Repair rebuilds the mirror from the registry (the source of truth): a damaged or missing copy is
logged again into the same run from the verified registry file; a run that is gone or deleted
is replaced by a new one (the row's run id, and its evaluations', are cleared and the prefix is
mirrored again, as `sync-mlflow` would). Pointing `--tracking-uri` at a new, empty store and
repairing therefore mirrors every prefix anew. A store that cannot be read at all is reported
as one problem and left alone: nothing in it can be trusted or rewritten from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import TYPE_CHECKING

from registry import mirror
from registry.records import MirrorProblem
from registry.tracking import MlflowTracker
from registry.uow import UnitOfWork
from tasks.errors import ConfigError

if TYPE_CHECKING:
    from registry.ports import RegistryCore

PREFIX_FILE = "prefix.safetensors"


def verify(
    reg: RegistryCore, *, repair: bool, skip: Collection[int] = ()
) -> tuple[int, list[MirrorProblem], list[int]]:
    """(runs checked, problems found, prefix ids whose mirror was repaired). Prefixes in `skip`
    (another workspace's, sharing the database: `registry.integrity`) are left to it."""
    tracker = reg.tracker
    if not isinstance(tracker, MlflowTracker):
        raise ConfigError(
            f"--mlflow: this registry has no MLflow store (--tracking-uri {tracker.uri}); "
            "name one with --tracking-uri or $MLFLOW_TRACKING_URI"
        )
    rows = reg.db.read(lambda uow: uow.prefixes.mirrored())
    problems: list[MirrorProblem] = []
    repaired: list[int] = []
    checked = 0
    for pid, task, version, sha, run_id in rows:
        if pid in skip:
            continue
        try:
            state, tag, data = tracker.stored_copy(run_id, PREFIX_FILE)
        except Exception as e:  # noqa: BLE001 - whatever the store raises, it cannot be read
            line = f"MLflow store {tracker.uri} cannot be read: {mirror.first_line(e) or type(e).__name__}"
            problems.append(MirrorProblem(None, "", None, None, line))
            break
        checked += 1
        actual = None if data is None else hashlib.sha256(data).hexdigest()
        if state != "ok":
            what = f"run {run_id} is {state} in MLflow"
        elif actual is None:
            what = f"run {run_id} has no {PREFIX_FILE}"
        elif actual != sha:
            what = f"run {run_id}'s {PREFIX_FILE} hashes to {actual[:12]}…, the registry's to {sha[:12]}…"  # fmt: skip
        elif tag != sha:
            what = f"run {run_id}'s continual.sha256 tag is {tag!r}, the registry's {sha[:12]}…"
        else:
            continue
        if repair:
            failed = _repair(reg, tracker, (pid, task, run_id), state)
            if failed is None:
                repaired.append(pid)
            else:
                what += f" (not repaired: {failed})"
        problems.append(MirrorProblem(pid, task, version, run_id, what))
    return checked, problems, repaired


def _repair(
    reg: RegistryCore, tracker: MlflowTracker, row: tuple[int, str, str], state: str
) -> str | None:
    """Rebuild one prefix's mirror; None when done, else why not (one line)."""
    pid, task, run_id = row
    try:
        if state == "ok":
            p = reg.db.read(lambda uow: uow.prefixes.get(pid))
            assert p is not None
            data = reg.artifacts.read_verified(p.artifact_path, p.sha256)  # never copy bad bytes
            tracker.restore_copy(run_id, {PREFIX_FILE: data}, p.sha256)
            return None

        def forget(uow: UnitOfWork) -> None:
            uow.prefixes.clear_mlflow_run(pid, run_id)

        if state == "deleted":
            tracker.drop_versions(task, run_id)
        reg.db.write(forget)
        if mirror.log_prefix(reg, pid):
            return None
        return "MLflow gave no run; `continual registry sync-mlflow` retries"
    except Exception as e:  # noqa: BLE001 - the registry's file bad, MLflow failing, ...
        return mirror.first_line(e) or type(e).__name__
