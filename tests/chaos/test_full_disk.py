"""Full disk: the workspace lives on a small tmpfs mounted by the drill, filled so that a `learn`
runs out of space at a different moment each case (the database, the stored dataset, the prefix
file, the report). Each run that fails must say so in one error line with a non-zero exit and
leave the registry consistent (`registry check` clean: no missing or corrupt file, no leftover
file); once space is back the same command succeeds. Without the right to mount (not root), the
drill uses a per-file size limit (RLIMIT_FSIZE) instead, which fails the first large write.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import scaled
from tests.integration.conftest import ROOT, child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # full scale: up to ~30 min

SEED = 20261204
STEPS = ["--steps", "12", "--eval-every", "6", "--batch-size", "8", "--prefix-length", "4"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 64 MB tmpfs at tmp_path/disk (None where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(mount: Path, leave: int) -> Path:
    """A filler file leaving about `leave` bytes free on the mount."""
    filler = mount / "filler"
    size = max(0, free_bytes(mount) - leave)
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        while size > 0:
            n = min(size, len(chunk))
            f.write(chunk[:n])
            size -= n
    return filler


def learn(home: Path, files: Path, encoder: Path, name: str, fsize: int | None = None):
    argv = [sys.executable, "-m", "pipelines.cli", "learn", "--backbone", str(encoder),
            "--stream", "s", "--name", name, "--train", str(files / "good-train.jsonl"),
            "--eval", str(files / "good-eval.jsonl"), "--home", str(home),
            "--tracking-uri", "none", "--quiet", "--json", *STEPS]  # fmt: skip

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, preexec_fn=limit,
        timeout=300,
    )  # fmt: skip


def check(home: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "registry", "check", "--json", "--home", str(home),
         "--tracking-uri", "none"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return json.loads(r.stdout)


def test_a_full_disk_fails_cleanly_and_the_next_run_succeeds(
    drill: Callable, base_home: Path, small_disk: Path | None, tmp_path: Path, tiny_encoder_dir
) -> None:
    from tests.chaos.test_bad_input import write_files

    d = drill(
        "full disk",
        "one error line, exit ≠ 0, `registry check` clean with no leftover file; the same "
        "command succeeds once space is back",
    )
    files = tmp_path / "files"
    write_files(files)
    where = small_disk or tmp_path / "limited"
    d.extra["how"] = "tmpfs mount" if small_disk else "RLIMIT_FSIZE"
    # How much one arrival writes, measured on the same disk.
    probe = where / "probe"
    shutil.copytree(base_home, probe)
    before = free_bytes(where) if small_disk else 0
    ok = learn(probe, files, tiny_encoder_dir, "t9")
    assert ok.returncode == 0, ok.stderr[-2000:]
    need = (
        (before - free_bytes(where))
        if small_disk
        else max(f.stat().st_size for f in probe.rglob("*") if f.is_file())
    )
    shutil.rmtree(probe)
    d.extra["bytes_one_arrival_writes"] = need
    rng = random.Random(SEED)
    n = scaled(2, 16)
    for i in range(n):
        share = (i + rng.random()) / n  # of what an arrival needs, spread over (0, 1)
        home = where / f"home-{uuid.uuid4().hex[:6]}"
        shutil.copytree(base_home, home)
        filler = fill(where, int(share * need)) if small_disk else None
        failed = learn(home, files, tiny_encoder_dir, "t9", None if small_disk else int(share * need))  # fmt: skip
        if filler is not None:
            filler.unlink()
        errors = [x for x in failed.stderr.splitlines() if x.startswith("error:")]
        problems = []
        if failed.returncode == 0:
            problems.append("it succeeded (the space was enough)")
        elif len(errors) != 1 or "Traceback" in failed.stderr:
            problems.append(f"{len(errors)} error lines: {failed.stderr.strip()[-400:]}")
        report = check(home)
        leftovers = report["orphans"] + report["recent_orphans"]
        if report["missing"] or report["corrupt"] or leftovers:
            problems.append(f"registry check: {report['missing'] + report['corrupt']} {leftovers}")
        again = learn(home, files, tiny_encoder_dir, "t9")
        if again.returncode != 0:
            problems.append(f"the next run failed: {again.stderr.strip()[-400:]}")
        seen = errors[0] if errors else failed.stderr.strip()[-200:]
        case = f"{share:.0%} of the space an arrival needs"
        d.case(case, not problems, "; ".join(problems + [seen]), rc=failed.returncode)
        shutil.rmtree(home)
    d.assert_clean()
