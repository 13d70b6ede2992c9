"""Concurrent writers: 8 processes at once on one registry, on SQLite and on PostgreSQL: three
`train` (two new tasks, and a new version of a task already there), four `learn` (two into each
of two streams) and one `registry import` (a new version of another task). Every process must
succeed with no lock or serialization error reaching its user (they are retried inside), and
the registry must hold exactly what the eight asked for: each task once, versions 1..n with one
current, each stream's positions taken once, every job done once, `registry check` clean.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from registry import Registry
from tests.chaos.conftest import scaled
from tests.integration.conftest import ROOT, child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # full scale: up to ~30 min

TRAIN = ["--steps", "12", "--eval-every", "6", "--batch-size", "8", "--prefix-length", "4"]
SHOWN = ("database is locked", "could not serialize", "deadlock", "Traceback", "IntegrityError")
#: what the registry must hold afterwards: task -> versions
EXPECTED = {"t1": 2, "t2": 2, "w1": 1, "w2": 1, "sa1": 1, "sa2": 1, "sb1": 1, "sb2": 1}


def cli(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, argv)], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, check=check)  # fmt: skip


def writers(common: list[str], files: Path, encoder: Path, export: Path) -> list[list[str]]:
    data = ["--train", str(files / "good-train.jsonl"), "--eval", str(files / "good-eval.jsonl")]
    e = str(encoder)
    out = [["train", "--backbone", e, "--name", n, *data, *TRAIN] for n in ("w1", "w2")]
    out.append(["train", "--backbone", e, "--name", "t1", "--new-version", *data, *TRAIN])
    for stream in ("sa", "sb"):
        for i in (1, 2):
            out.append(["learn", "--backbone", e, "--stream", stream, "--name", f"{stream}{i}", *data, *TRAIN])  # fmt: skip
    out.append(["registry", "import", str(export), "--new-version"])
    return [[sys.executable, "-m", "pipelines.cli", *argv, *common] for argv in out]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_eight_writers_lose_and_duplicate_nothing(
    database: str, request, drill: Callable, drills: dict, tmp_path: Path, tiny_encoder_dir: Path
) -> None:
    from tests.chaos.test_bad_input import write_files

    d = drills.get("concurrent writers") or drill(
        "concurrent writers",
        "8 processes (train, learn into two streams, import) at once: all succeed, no lock "
        "error shown, nothing lost or duplicated, `registry check` clean",
    )
    files = tmp_path / "files"
    write_files(files)
    data = ["--train", files / "good-train.jsonl", "--eval", files / "good-eval.jsonl"]
    for r in range(scaled(1, 3)):
        home = tmp_path / f"home-{r}"
        url = ["--registry-url", request.getfixturevalue("pg_urls")()] if database == "postgresql" else []  # fmt: skip
        common = ["--home", str(home), *url, "--tracking-uri", "none", "--quiet"]
        for name in ("t1", "t2"):  # the tasks already there
            cli("train", "--backbone", tiny_encoder_dir, "--name", name, *data, *TRAIN, *common)
        export = tmp_path / f"export-{r}"
        cli("registry", "export", "t2", "--format", "safetensors", "--out", export, *common)
        procs = [
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for argv in writers(common, files, tiny_encoder_dir, export)
        ]
        ran = [(" ".join(p.args[3:5]), *p.communicate(timeout=900), p.returncode) for p in procs]
        problems = [f"{c}: exit {rc}: {err.strip()[-300:]}" for c, _, err, rc in ran if rc != 0]
        problems += [f"{c} showed {s!r}" for c, _, err, _ in ran for s in SHOWN if s in err]
        problems += registry_problems(home, url[1] if url else None)
        d.case(f"{database} round {r + 1}: 8 writers", not problems, "; ".join(problems) or "all 8 landed")  # fmt: skip
    mine = [c for c in d.failures if c["id"].startswith(database)]
    assert not mine, "\n".join(f"{c['id']}: {c['seen']}" for c in mine)


def registry_problems(home: Path, url: str | None) -> list[str]:
    out = []
    with Registry.open(home, url=url, tracking_uri="none") as reg:
        for task, n in EXPECTED.items():
            versions = sorted(p.version for p in reg.prefixes(task, limit=100))
            current = [p.version for p in reg.prefixes(task, limit=100) if p.is_current]
            if versions != list(range(1, n + 1)) or current != [n]:
                out.append(f"{task}: versions {versions}, current {current}")
        if sorted(t.name for t in reg.tasks()) != sorted(EXPECTED):
            out.append(f"tasks {sorted(t.name for t in reg.tasks())}")
        for stream in ("sa", "sb"):
            arrivals = sorted((a.position, a.task, a.status) for a in reg.streams.arrivals() if a.stream == stream and a.method == "prefix")  # fmt: skip
            if [a[0] for a in arrivals] != [0, 1] or {a[1] for a in arrivals} != {f"{stream}1", f"{stream}2"} or any(a[2] != "done" for a in arrivals):  # fmt: skip
                out.append(f"stream {stream}: {arrivals}")
        jobs = [(j.task, j.state) for j in reg.queue.list(limit=100)]
        if sorted(jobs) != sorted((f"{s}{i}", "done") for s in ("sa", "sb") for i in (1, 2)):
            out.append(f"jobs {jobs}")
        report = reg.check(grace_s=0)
        if not report.ok or report.recent_orphans:
            out.append(f"check: {report}")
    return out
