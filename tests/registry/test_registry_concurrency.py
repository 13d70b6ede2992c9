"""Real processes at the same moment: registrations all land with no lock error reaching the
user, version numbers stay unique with exactly one current prefix per task, and an empty
database opened by two processes at once is migrated once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from registry_testkit import register

from registry import NullTracker, Registry

WORKER = Path(__file__).with_name("registry_worker.py")
PER_WORKER = 4


def _race(workspace: Path, db_url: str | None, *extra: str) -> list[list[int]]:
    """Start two workers, release them together, return the prefix ids each registered."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(workspace), db_url or "-", name, str(PER_WORKER)]
            + list(extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    try:
        for p in procs:  # both are ready; now release them together
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ids = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
        ids.append(json.loads(out.strip().splitlines()[-1]))
    return ids


def test_two_processes_register_at_once(reg: Registry, db_url: str | None) -> None:
    register(reg, "shared")
    assert [len(ids) for ids in _race(reg.workspace, db_url)] == [2 * PER_WORKER] * 2
    names = {t.name for t in reg.tasks()}
    assert names == {"shared"} | {f"{w}-{i}" for w in ("alpha", "beta") for i in range(PER_WORKER)}
    shared = reg.prefixes(task="shared")
    assert sorted(p.version for p in shared) == list(range(1, 2 * PER_WORKER + 2))
    assert [p.version for p in shared if p.is_current] == [2 * PER_WORKER + 1]
    assert reg.check().ok


def test_two_processes_open_an_empty_database_at_once(workspace: Path, db_url: str | None) -> None:
    assert [len(ids) for ids in _race(workspace, db_url, "late")] == [PER_WORKER] * 2
    with Registry.open(workspace, url=db_url, tracker=NullTracker()) as reg:
        assert len(reg.tasks()) == 2 * PER_WORKER
