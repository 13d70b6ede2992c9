"""`continual tokens` and a job's live progress record."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pipelines.cli import main
from registry import Registry
from registry.tokens import digest


def _cli(*argv: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([*argv, "--json", "--tracking-uri", "none"])
    return code, json.loads(out.getvalue())


def test_tokens_are_shown_once_and_stored_as_hashes(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    code, made = _cli("tokens", "create", "--scope", "write", "--name", "ci", "--home", home)
    assert code == 0 and made["token"].startswith("ct_") and made["scope"] == "write"
    code, listed = _cli("tokens", "list", "--home", home)
    assert code == 0 and [t["name"] for t in listed["tokens"]] == ["ci"]
    assert made["token"] not in json.dumps(listed)
    db = (tmp_path / "home" / "registry.db").read_bytes()
    assert made["token"].encode() not in db and digest(made["token"]).encode() in db
    with Registry.open(tmp_path / "home", tracking_uri="none") as reg:
        assert reg.tokens.verify(made["token"]).name == "ci"
        assert reg.tokens.verify(made["token"] + "x") is None
    code, revoked = _cli("tokens", "revoke", str(made["id"]), "--home", home)
    assert code == 0 and revoked["token"]["revoked_at"]
    code, again = _cli("tokens", "revoke", str(made["id"]), "--home", home)
    assert code == 2 and "already revoked" in again["error"]
    with Registry.open(tmp_path / "home", tracking_uri="none") as reg:
        assert reg.tokens.verify(made["token"]) is None and reg.tokens.active() == 0
    code, bad = _cli("tokens", "create", "--scope", "write", "--name", "no spaces", "--home", home)
    assert code == 2 and bad["error"]


def test_job_progress_is_written_by_phase_and_throttled_by_step(tmp_path: Path) -> None:
    import os
    import socket

    from pipelines.arrival.live import JobProgress

    here = {"process": f"{socket.gethostname()}:{os.getpid()}"}  # the process doing the work

    with Registry.open(tmp_path / "home", tracking_uri="none") as reg:
        job = reg.queue.enqueue(stream="s", task="t", payload={})
        claimed = reg.queue.claim("w1", lease_s=60)
        assert claimed is not None and claimed.id == job.id
        live = JobProgress(reg, job.id, "w1", every_s=3600)
        live.phase("prefix · train (10 steps)")
        assert reg.queue.get(job.id).progress == {"phase": "prefix · train (10 steps)", **here}
        live.step(1, 10, 0.5)  # within every_s of the phase's write: kept in memory only
        assert reg.queue.get(job.id).progress == {"phase": "prefix · train (10 steps)", **here}
        live.step(10, 10, 0.25)  # the last step is always written
        got = reg.queue.get(job.id).progress
        assert got == {
            "phase": "prefix · train (10 steps)",
            "step": 10,
            "steps": 10,
            "loss": 0.25,
            **here,
        }
        other = JobProgress(reg, job.id, "w2")  # a worker that does not own the job writes nothing
        other.phase("hijack")
        assert reg.queue.get(job.id).progress["phase"] == "prefix · train (10 steps)"
