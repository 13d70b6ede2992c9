"""Workers on one registry: arrivals of two streams queued, several `continual worker`
processes taking them, one SIGKILLed in the middle of an arrival. Another worker takes its job
once the lease has expired and finishes it; every job ends `done` once, no row is duplicated or
missing, and each stream's accuracy matrix equals an uninterrupted serial run's.

PostgreSQL with 4 workers (skipped, saying why, when no server answers) and SQLite with 2.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import Registry

ROOT = Path(__file__).resolve().parents[2]
STREAMS = {
    "alpha": (("a1", ("positive", "negative"), 1), ("a2", ("yes", "no"), 3)),
    "beta": (("b1", ("bad", "good"), 5), ("b2", ("positive", "negative"), 7)),
}
STREAMS["alpha"] += (("a3", ("bad", "good"), 9),)
STREAMS["beta"] += (("b3", ("yes", "no"), 11),)
TRAIN = ["--steps", "24", "--lr", "1e-2", "--prefix-length", "4", "--eval-every", "8"]
TRAIN += ["--batch-size", "8", "--init", "random"]
LEASE_S = 4
PG_ADMIN = os.environ.get(
    "CONTINUAL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def cli(home: Path, url: str | None, *argv: str | Path) -> dict:
    args = [sys.executable, "-m", "pipelines.cli", *map(str, argv), "--home", str(home)]
    args += ["--json", "--quiet", "--tracking-uri", "none"]
    args += ["--registry-url", url] if url else []
    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def write_data(folder: Path, sentiment) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for tasks in STREAMS.values():
        for task, labels, seed in tasks:
            for split, n in (("train", 48), ("eval", 24)):
                rows = sentiment(n, seed=seed + (split == "eval") * 100, labels=labels)
                text = "".join(json.dumps(r) + "\n" for r in rows)
                (folder / f"{task}-{split}.jsonl").write_text(text, encoding="utf-8")


def queue_all(home: Path, url: str | None, data: Path, backbone: Path) -> list[int]:
    """Every arrival of both streams queued, in order (the streams interleaved)."""
    jobs = []
    for i in range(3):
        for stream, tasks in STREAMS.items():
            if i >= len(tasks):
                continue
            task = tasks[i][0]
            extra = ["--baseline", "sequential-ft"] if stream == "alpha" and i == 0 else []
            out = cli(
                home, url, "learn", "--queue", "--backbone", backbone, "--stream", stream,
                "--name", task, "--train", data / f"{task}-train.jsonl",
                "--eval", data / f"{task}-eval.jsonl", *TRAIN, *extra,
            )  # fmt: skip
            assert out["state"] == "queued" and out["stream"] == stream
            jobs.append(out["job"])
    return jobs


def matrices(home: Path, url: str | None) -> dict[str, dict]:
    """Per stream and method: R and the predictions hashes, read from the registry."""
    out = {}
    with Registry.open(home, url=url, tracking_uri="none") as reg:
        for stream in STREAMS:
            scores = sorted(
                (e.task, e.method, e.position, round(e.value, 9), e.predictions_sha256)
                for e in reg.streams.evaluations(stream)
            )
            arrivals = sorted(
                (a.method, a.position, a.task, a.status) for a in reg.streams.arrivals(None, stream)
            )
            out[stream] = {"scores": scores, "arrivals": arrivals}
    return out


def run_workers(
    home: Path, url: str | None, n: int, trigger: str
) -> tuple[list[subprocess.Popen], str]:
    """Start `n` workers; SIGKILL the one that prints `trigger`; wait for the rest to end."""
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    procs = []
    for i in range(n):
        args = [sys.executable, "-m", "pipelines.cli", "worker", "--until-empty", "--poll", "0.5"]
        args += ["--lease", str(LEASE_S), "--home", str(home), "--tracking-uri", "none", "--json"]
        args += ["--quiet"] + (["--registry-url", url] if url else [])
        # each worker as on its own machine: only the lease can tell that one is gone
        env = _env(CONTINUAL_WORKER_NAME=f"node{i}", CONTINUAL_THREADS="1")
        p = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append(p)
        threading.Thread(target=_pump, args=(i, p, lines), daemon=True).start()
    killed, seen = None, []
    deadline = time.monotonic() + 600
    while killed is None and time.monotonic() < deadline:
        try:
            i, line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(f"{i}: {line}")
        if trigger in line:
            procs[i].send_signal(signal.SIGKILL)
            killed = i
    assert killed is not None, f"no worker reached {trigger!r}:\n" + "\n".join(seen[-50:])
    for i, p in enumerate(procs):
        p.wait(timeout=600)
        if i != killed:
            assert p.returncode == 0, "\n".join(seen[-50:])
    assert procs[killed].returncode == -signal.SIGKILL
    return procs, f"node{killed}"


def _pump(i: int, proc: subprocess.Popen, lines: queue.Queue) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.put((i, line.rstrip()))


@pytest.fixture
def pg_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN)
    info = dict(host=admin.host, port=admin.port or 5432, user=admin.username, dbname="postgres")
    try:
        conn = psycopg.connect(**info, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        pytest.skip(f"no PostgreSQL server at {admin.host}: {str(e).splitlines()[0]}")
    name = f"continual_workers_{secrets.token_hex(4)}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "workers"), [("postgresql", 4), ("sqlite", 2)])
def test_workers_share_a_queue_and_survive_a_kill(
    request, backend, workers, serial, tmp_path, tiny_encoder_dir, sentiment
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    home = tmp_path / "home"
    write_data(tmp_path / "data", sentiment)
    jobs = queue_all(home, url, tmp_path / "data", tiny_encoder_dir)
    _, lost = run_workers(home, url, workers, "[alpha 2] a2 · prefix · train")
    with Registry.open(home, url=url, tracking_uri="none") as reg:
        ended = {j: reg.queue.get(j) for j in jobs}
    assert all(j.state == "done" for j in ended.values()), ended
    retaken = [j for j in ended.values() if j.task == "a2"][0]
    assert retaken.attempts == 2 and not retaken.worker_id  # a second attempt finished it
    assert retaken.result["runtime"]["worker"].split(":")[0] != lost
    assert all(j.attempts == 1 for j in ended.values() if j.task != "a2")
    got = matrices(home, url)
    assert got == serial  # every row once, the same scores and hashes as the serial run
    assert len(got["alpha"]["arrivals"]) == 6 and len(got["beta"]["arrivals"]) == 3
