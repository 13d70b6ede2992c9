"""`Registry.check`: rows against files, and the repair that never loses a good prefix.

Problems: rows whose file is missing, rows whose file hashes differently (corrupt), files no row
references (orphans). Repair removes orphan files, marks rows with a bad prefix file 'broken'
(a broken current prefix stays current, so the task visibly needs retraining) and drops a bad
optimizer-state reference (resume is then impossible, the prefix itself is fine). Rows already
broken are listed but are no longer counted as new problems; one whose file is intact again is
set back to 'ok'. Unreferenced files younger than `grace_s` may belong to a registration in
flight (file written, row not yet committed) and are left alone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from registry.records import ArtifactProblem, CheckReport
from registry.uow import UnitOfWork

if TYPE_CHECKING:
    from registry.api import Registry

GRACE_S = 300.0


def check(reg: Registry, *, repair: bool, grace_s: float = GRACE_S) -> CheckReport:
    store = reg.artifacts
    now = time.time()
    on_disk = list(store.files())  # listed before the rows are read: see the module docstring
    refs = reg.db.read(lambda uow: uow.prefixes.file_refs())
    hashes: dict[str, str | None] = {}
    referenced: set[str] = set()
    missing: list[ArtifactProblem] = []
    corrupt: list[ArtifactProblem] = []
    broken_prefix: list[int] = []  # status ok, prefix file bad
    bad_optimizer: list[int] = []
    restored: list[int] = []
    for pid, task, version, status, path, sha, opt_path, opt_sha in refs:
        for kind, rel, expected in (("prefix", path, sha), ("optimizer", opt_path, opt_sha)):
            if rel is None or expected is None:
                continue
            referenced.add(rel)
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
    return CheckReport(
        ok=not (missing or corrupt or orphans),
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
    )
