"""Outages: the MLflow server down before or during an arrival, PostgreSQL restarted in the
middle of one, the blob store read-only. An arrival must still land (MLflow is a mirror) or end
with one error line and nothing half-written; once the service is back, `registry sync-mlflow`
catches up with one MLflow run per prefix, and running the same command again completes it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry import Registry
from tests.chaos.conftest import scaled
from tests.conftest import free_port
from tests.integration.conftest import ROOT, child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SEED = 20261205
CHECKS = (
    "MLflow down: the arrival lands, `sync-mlflow` catches up with one run per prefix; "
    "PostgreSQL restarted: the arrival completes (at most one line and a rerun); blob store "
    "read-only: one line, nothing written, the rerun succeeds once writable"
)
TRAIN = ["--steps", "16", "--eval-every", "8", "--batch-size", "8", "--prefix-length", "4"]


class MlflowServer:
    """`mlflow server` on a SQLite backend that outlives the process (stopped and started)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination",
                (self.root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port",
                str(self.port), "--workers", "1"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with open(self.root / "server.log", "a") as log:
            # its own process group: `mlflow server` runs uvicorn and job runners as children,
            # which outlive a SIGKILL of the parent alone and keep answering on the port
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-600:]}")  # fmt: skip
            time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and every process it started
            self.proc.wait(timeout=30)
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                except OSError:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"MLflow still answers on {self.url} after the kill")
                time.sleep(0.2)

    def runs_per_prefix(self) -> dict[str, int]:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.url)
        ids = [e.experiment_id for e in client.search_experiments()]
        counts: dict[str, int] = {}
        for r in client.search_runs(ids, filter_string="tags.`continual.prefix_id` != ''") if ids else []:  # fmt: skip
            pid = r.data.tags["continual.prefix_id"]
            counts[pid] = counts.get(pid, 0) + 1
        return counts


def cli(*argv: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, argv)], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=600)  # fmt: skip


def start(*argv: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *map(str, argv)], cwd=ROOT,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def one_line(stderr: str) -> bool:
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    return len(errors) == 1 and "Traceback" not in stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from tests.chaos.test_bad_input import write_files

    folder = tmp_path_factory.mktemp("outage-files")
    write_files(folder)
    return folder


def _learn(home: Path, files: Path, encoder: Path, name: str, *extra: str | Path) -> list:
    return ["learn", "--backbone", encoder, "--stream", "s", "--name", name,
            "--train", files / "good-train.jsonl", "--eval", files / "good-eval.jsonl",
            *TRAIN, "--home", home, "--quiet", *extra]  # fmt: skip


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A started `MlflowServer`; its process group is killed at the end whatever happened."""
    server = MlflowServer(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()


def test_mlflow_down_before_or_during_arrivals(
    drill: Callable,
    drills: dict,
    base_home: Path,
    tmp_path: Path,
    files: Path,
    tiny_encoder_dir,
    mlflow_server: MlflowServer,
) -> None:
    d = drills.get("outages") or drill("outages", CHECKS)
    server = mlflow_server
    rng = random.Random(SEED)
    home = tmp_path / "home"
    shutil.copytree(base_home, home)
    uri = ("--tracking-uri", server.url)
    r = cli(*_learn(home, files, tiny_encoder_dir, "m0", *uri))  # up: the reference case
    assert r.returncode == 0, r.stderr[-1500:]
    n = scaled(1, 6)
    for i in range(n):
        name = f"m{i + 1}"
        during = i % 2 == 1  # alternate: down from the start, killed during the arrival
        if not during:
            server.kill()
            proc = start(*_learn(home, files, tiny_encoder_dir, name, *uri))
        else:
            proc = start(*_learn(home, files, tiny_encoder_dir, name, *uri))
            time.sleep(rng.uniform(2.0, 8.0))
            server.kill()
        out, err = proc.communicate(timeout=600)
        problems = [] if proc.returncode == 0 else [f"exit {proc.returncode}: {err.strip()[-300:]}"]
        server.start()
        synced = cli("registry", "sync-mlflow", "--home", home, *uri)
        if synced.returncode != 0:
            problems.append(f"sync-mlflow exit {synced.returncode}: {synced.stderr.strip()[-300:]}")
        with Registry.open(home, tracking_uri="none") as reg:
            ids = {str(p.id) for t in reg.tasks() for p in reg.prefixes(t.name, limit=100) if t.name.startswith("m")}  # fmt: skip
            unmirrored = [p.id for t in reg.tasks() for p in reg.prefixes(t.name, limit=100) if t.name.startswith("m") and not p.mlflow_run_id]  # fmt: skip
        counts = server.runs_per_prefix()
        if unmirrored:
            problems.append(f"prefixes {unmirrored} not mirrored after sync")
        if any(counts.get(pid, 0) != 1 for pid in ids):
            problems.append(f"runs per prefix {counts}")
        case = f"MLflow {'killed during' if during else 'down before'} arrival {name}"
        d.case(case, not problems, "; ".join(problems) or "landed; sync caught up; one run each")
    mine = [c for c in d.failures if c["id"].startswith("MLflow")]
    assert not mine, "\n".join(f"{c['id']}: {c['seen']}" for c in mine)


def _pg_restart() -> bool:
    version = sorted(os.listdir("/etc/postgresql"))[0] if os.path.isdir("/etc/postgresql") else ""
    r = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                       capture_output=True, text=True)  # fmt: skip
    return r.returncode == 0


def test_postgresql_restarted_mid_arrival(
    drill: Callable, drills: dict, pg_urls, tmp_path: Path, files: Path, tiny_encoder_dir
) -> None:
    d = drills.get("outages") or drill("outages", CHECKS)
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("pg_ctlcluster is not here: cannot restart PostgreSQL")
    rng = random.Random(SEED + 1)
    for i in range(scaled(1, 4)):
        url = pg_urls()
        home = tmp_path / f"pg-{i}"
        argv = _learn(home, files, tiny_encoder_dir, "p1", "--registry-url", url, "--tracking-uri", "none")  # fmt: skip
        proc = start(*argv)
        time.sleep(rng.uniform(3.0, 9.0))
        restarted = _pg_restart()
        out, err = proc.communicate(timeout=600)
        problems = [] if restarted else ["pg_ctlcluster restart failed"]
        how = "completed"
        if proc.returncode != 0:
            how = "one line, then the rerun completed"
            if not one_line(err):
                problems.append(f"exit {proc.returncode} without one error line: {err.strip()[-400:]}")  # fmt: skip
            again = cli(*argv)
            if again.returncode != 0:
                problems.append(f"the rerun failed: {again.stderr.strip()[-300:]}")
        with Registry.open(home, url=url, tracking_uri="none") as reg:
            jobs = [(j.task, j.state) for j in reg.queue.list(limit=10)]
            versions = [p.version for p in reg.prefixes("p1", limit=10)]
            report = reg.check(grace_s=0)
        if jobs != [("p1", "done")] or versions != [1]:
            problems.append(f"jobs {jobs}, versions {versions}")
        if not report.ok:
            problems.append(f"check: {report}")
        d.case(f"PostgreSQL restarted during arrival #{i + 1}", not problems, "; ".join(problems) or how)  # fmt: skip
    mine = [c for c in d.failures if c["id"].startswith("PostgreSQL")]
    assert not mine, "\n".join(f"{c['id']}: {c['seen']}" for c in mine)


def test_blob_store_read_only(
    drill: Callable, drills: dict, tmp_path: Path, files: Path, tiny_encoder_dir
) -> None:
    d = drills.get("outages") or drill("outages", CHECKS)
    mount = tmp_path / "blobs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        home = tmp_path / "home"  # a workspace whose files were always in this store
        store = ("--store", mount.as_uri(), "--tracking-uri", "none")
        r = cli(*_learn(home, files, tiny_encoder_dir, "b0", *store))  # the store in use
        assert r.returncode == 0, r.stderr[-1500:]
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with Registry.open(home, tracking_uri="none", store=mount.as_uri()) as reg:
            before = (len(reg.tasks()), reg.queue.count(), reg.data.count())
        failed = cli(*_learn(home, files, tiny_encoder_dir, "b1", *store))
        with Registry.open(home, tracking_uri="none", store=mount.as_uri()) as reg:
            after = (len(reg.tasks()), reg.queue.count(), reg.data.count())
        problems = []
        if failed.returncode == 0 or not one_line(failed.stderr):
            problems.append(f"exit {failed.returncode}: {failed.stderr.strip()[-400:]}")
        if after != before:
            problems.append(f"rows changed: {before} -> {after}")
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)
        again = cli(*_learn(home, files, tiny_encoder_dir, "b1", *store))
        if again.returncode != 0:
            problems.append(f"the rerun failed: {again.stderr.strip()[-300:]}")
        seen = next((x for x in failed.stderr.splitlines() if x.startswith("error:")), "")
        d.case("blob store read-only during an arrival", not problems, "; ".join(problems + [seen]))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    mine = [c for c in d.failures if c["id"].startswith("blob")]
    assert not mine, "\n".join(f"{c['id']}: {c['seen']}" for c in mine)
