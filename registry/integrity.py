"""`Registry.check`: rows against files, and the repair that never loses a good prefix.

Problems: rows whose file is missing, rows whose file hashes differently (corrupt), files no row
references (orphans). Repair removes orphan files, marks rows with a bad prefix file 'broken'
(a broken current prefix stays current, so the task visibly needs retraining) and drops a bad
optimizer-state reference (resume is then impossible, the prefix itself is fine). Rows already
broken are listed but are no longer counted as new problems; one whose file is intact again is
set back to 'ok'. Unreferenced files younger than `grace_s` may belong to a registration in
flight (file written, row not yet committed) and are left alone.

A database shared by several workspaces (PostgreSQL, or one SQLite file named by URL) holds rows
whose files live in another workspace's store. Only rows this workspace wrote are checked,
reported and repaired here, by this rule:

- the workspace's own SQLite database (`<workspace>/registry.db`) is private: every row is its;
- otherwise a row is this workspace's when its run records this store's id (`STORE_KEY` in the
  run config, written at registration; the id lives in `<workspace>/workspace-id`);
- a row that records no store (registered before stores were recorded) is judged here only when
  its file is in this store: a missing file may simply be in another workspace's store.

Every other row is listed in `elsewhere` and never marked broken from here; its files still count
as referenced, so a copy of the same bytes here is not removed as an orphan.

Stored datasets (uploads, and the data of every arrival) are referenced by their rows and
verified the same way (kind 'dataset'), as is each baseline's current saved state (kind
'baseline', against the hashes in its state.json). Repair never removes either: a corrupt
dataset or baseline is reported, and refused when loaded.

With `mlflow`, the MLflow mirror is read back and checked too (`registry.mirror_check`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.db import DB_FILE
from registry.records import ArtifactProblem, CheckReport
from registry.uow import UnitOfWork

if TYPE_CHECKING:
    from registry.ports import RegistryCore

GRACE_S = 300.0
STORE_KEY = "artifact_store"  # run config: {"id": store id, "path": workspace} of the writer


def private_database(reg: RegistryCore) -> bool:
    """Whether the registry's database is the workspace's own SQLite file."""
    url = reg.db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        return False
    return Path(url.database).resolve() == (reg.workspace / DB_FILE).resolve()


def writer(run_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The store a run's files went to ({"id", "path"}), None when the run recorded none."""
    found = (run_config or {}).get(STORE_KEY)
    return found if isinstance(found, dict) and found.get("id") else None


def check(
    reg: RegistryCore, *, repair: bool, grace_s: float = GRACE_S, mlflow: bool = False
) -> CheckReport:
    store = reg.artifacts
    now = time.time()
    on_disk = list(store.files())  # listed before the rows are read: see the module docstring
    refs = reg.db.read(lambda uow: uow.prefixes.file_refs())
    private, me = private_database(reg), store.store_id(create=False)
    hashes: dict[str, str | None] = {}
    referenced: set[str] = {r[4] for r in refs} | {r[6] for r in refs if r[6]}
    missing: list[ArtifactProblem] = []
    corrupt: list[ArtifactProblem] = []
    broken_prefix: list[int] = []  # status ok, prefix file bad
    bad_optimizer: list[int] = []
    restored: list[int] = []
    elsewhere: list[int] = []
    for pid, task, version, status, path, sha, opt_path, opt_sha, store_id in refs:
        if not private and store_id is None and path not in hashes:
            hashes[path] = store.hash_of(path)
        if not private and (store_id != me if store_id is not None else hashes[path] is None):
            elsewhere.append(pid)
            continue
        for kind, rel, expected in (("prefix", path, sha), ("optimizer", opt_path, opt_sha)):
            if rel is None or expected is None:
                continue
            if rel not in hashes:
                hashes[rel] = store.hash_of(rel)
            actual = hashes[rel]
            if actual == expected:
                if kind == "prefix" and status == "broken":
                    restored.append(pid)
                continue
            if kind == "prefix" and status == "broken":
                continue  # known already
            problem = ArtifactProblem(
                prefix_id=pid,
                task=task,
                version=version,
                kind=kind,
                path=rel,
                expected_sha256=expected,
                actual_sha256=actual,
            )
            (missing if actual is None else corrupt).append(problem)
            (broken_prefix if kind == "prefix" else bad_optimizer).append(pid)
    # Stored datasets (uploads and every arrival's data) are referenced too, and verified:
    # their files live beside the prefixes and were listed above.
    for path, sha, task in reg.db.read(lambda uow: uow.datasets.refs()):
        referenced.add(path)
        actual = hashes[path] = store.hash_of(path)
        if actual == sha or (actual is None and not private):  # another workspace's file
            continue
        problem = ArtifactProblem(None, task, None, "dataset", path, sha, actual)
        (missing if actual is None else corrupt).append(problem)
    for problem in baseline_problems(Path(reg.workspace)):
        (missing if problem.actual_sha256 is None else corrupt).append(problem)
    unreferenced = [f for f in on_disk if f not in referenced]
    orphans = [f for f in unreferenced if store.age_s(f, now) >= grace_s]
    recent = [f for f in unreferenced if f not in orphans]
    removed: list[str] = []
    if repair:
        latest = reg.db.read(lambda uow: uow.prefixes.file_refs())  # rows committed meanwhile
        still = {r[4] for r in latest} | {r[6] for r in latest if r[6]}
        for f in orphans:
            if f not in still:
                store.remove(f)
                removed.append(f)

        def write(uow: UnitOfWork) -> None:
            uow.prefixes.set_status(broken_prefix, "broken")
            uow.prefixes.drop_optimizer(bad_optimizer)
            uow.prefixes.set_status(restored, "ok")

        reg.db.write(write)
    mirrored: tuple[int | None, list, list] = (None, [], [])
    if mlflow:
        from registry import mirror_check

        mirrored = mirror_check.verify(reg, repair=repair, skip=set(elsewhere))
    return CheckReport(
        ok=not (missing or corrupt or orphans or mirrored[1]),
        checked_files=len(hashes),
        missing=tuple(missing),
        corrupt=tuple(corrupt),
        orphans=tuple(orphans),
        recent_orphans=tuple(recent),
        repaired=repair,
        removed=tuple(removed),
        marked_broken=tuple(sorted(set(broken_prefix))) if repair else (),
        dropped_optimizer=tuple(sorted(set(bad_optimizer) - set(broken_prefix))) if repair else (),
        restored=tuple(restored) if repair else (),
        elsewhere=tuple(elsewhere),
        mlflow_checked=mirrored[0],
        mlflow=tuple(mirrored[1]),
        remirrored=tuple(mirrored[2]),
    )


def baseline_problems(workspace: Path) -> list[ArtifactProblem]:
    """Check each baseline's current saved state (`[streams/NAME/]baselines/METHOD/CURRENT`
    names it) against the sha256 its `state.json` lists (`continual.baselines.save_learner`)."""
    import json

    from registry.artifacts import hash_file

    out: list[ArtifactProblem] = []
    pointers = [
        *workspace.glob("baselines/*/CURRENT"),
        *workspace.glob("streams/*/baselines/*/CURRENT"),
    ]
    for pointer in sorted(pointers):
        folder = pointer.parent / pointer.read_text().strip()
        method = pointer.parent.name
        state = folder / "state.json"
        try:
            files = json.loads(state.read_text()).get("files") or {}
        except (OSError, ValueError):
            rel = state.relative_to(workspace).as_posix()
            out.append(ArtifactProblem(None, method, None, "baseline", rel, "", None))
            continue
        for name, expected in files.items():
            path = folder / name
            actual = None
            if path.is_file():
                with open(path, "rb") as f:
                    actual = hash_file(f)
            if actual != expected:
                rel = path.relative_to(workspace).as_posix()
                out.append(ArtifactProblem(None, method, None, "baseline", rel, expected, actual))
    return out
