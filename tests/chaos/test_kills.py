"""kill -9 at seeded random moments across the commands that write: `stream run`, `learn`,
`train`, one `worker`, one of two workers, `serve` during an arrival, `registry import`,
`registry check --repair` and `registry sync-mlflow`. After each kill the same command is run
again (for a killed worker: a worker; for the server: the server, until its job is done), and
the workspace must equal an uninterrupted run's: the same registry rows (every score and
prediction hash, one arrival per method and position), every job done exactly once, `registry
check` clean (young leftovers of the killed process allowed, removed by `check --repair`), and
MLflow holding one run per prefix.

Each scenario first runs uninterrupted: its reference, the length of a run, and the moment the
command first wrote to its workspace (before that a kill can only cost start-up time: Python
importing torch is a third of a short command's life). Kills land uniformly from that first
write to 1.1 x the length, so some come after the work ends. The server's kills are timed from
the moment its arrival was accepted (202).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from registry import Registry
from tests.chaos.conftest import FULL, scaled
from tests.integration.conftest import ROOT, Server, child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # full scale: up to ~30 min

SEED = 20261204
TRAIN = ["--steps", "16", "--eval-every", "8", "--batch-size", "8", "--prefix-length", "4", "--lr", "1e-2"]  # fmt: skip
SERVED = {"steps": 16, "eval_every": 8, "batch_size": 8, "prefix_length": 4, "lr": 1e-2}
#: kills per scenario at full scale (100 in all); one each at quick scale
KILLS = {"stream run": 16, "learn": 12, "train": 10, "worker": 10, "two workers": 10,
         "serve": 12, "registry import": 10, "check --repair": 10, "sync-mlflow": 10}  # fmt: skip
#: the scenarios `make chaos-quick` (and so `make test`) kills once; the others run at full scale
#: (the suite kills `train` in test_integration_sigkill and one of several workers in test_workers)
QUICK = ("stream run", "serve", "sync-mlflow")


def cli_argv(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *map(str, args)]


def run(*args: str | Path, ok: tuple[int, ...] = (0,), env: dict | None = None) -> str:
    r = subprocess.run(cli_argv(*args), cwd=ROOT, env=env or child_env(), capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert r.returncode in ok, f"{args[:3]} exit {r.returncode}: {r.stderr[-1500:]}"
    return r.stdout


@dataclass
class Scenario:
    """A command to kill, how to set its workspace up, and how to recover after the kill."""

    name: str
    setup: Callable[[Path], None]  # fill the (empty) home folder
    argv: Callable[[Path], list[str | Path]]
    recover: Callable[[Path], None]
    companion: Callable[[Path], list[str | Path]] | None = None  # runs beside, not killed
    env: dict[str, str] = field(default_factory=dict)
    #: runs the scenario itself (the server): (home, delay or None, env) -> what `once` returns
    drive: Callable[[Path, float | None, dict], tuple[str, float, float]] | None = None

    def once(self, home: Path, delay: float | None, env: dict) -> tuple[str, float, float]:
        """Run it on `home`, killed `delay` s after it started (None: let it finish); return
        how far it got ('killed' or 'finished'), when it first wrote to `home` and how long it
        ran (s)."""
        if self.drive is not None:
            return self.drive(home, delay, env)
        began = time.monotonic()
        with Watch(home) as watch:
            companion = self.companion and self.companion(home)
            outcome = kill_at(self.argv(home), 600 if delay is None else delay, env, companion)
        return outcome, watch.first, time.monotonic() - began


class Watch:
    """When anything under a folder first changes (files added, grown, rewritten), polled every
    20 ms from a thread; SQLite's shared-memory index and an empty write-ahead log, which
    merely opening a database makes, do not count."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.first = folder, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _signature(self) -> set[tuple[str, int, int]] | None:
        out = set()
        try:
            for path in self.folder.rglob("*"):
                st = path.stat()
                if path.is_file() and not path.name.endswith("-shm") and st.st_size:
                    out.add((str(path), st.st_size, st.st_mtime_ns))
        except OSError:  # a file or folder went while listed: look again at the next tick
            return None
        return out

    def _poll(self) -> None:
        before = self._signature()
        while before is None:
            before = self._signature()
        while not self._stop.wait(0.02):
            now = self._signature()
            if now is not None and now != before:
                self.first = time.monotonic() - self._began
                return

    def __enter__(self) -> Watch:
        self._began = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()  # `first` stays 0.0 when no write was seen: the whole run counts


def snapshot(home: Path) -> dict[str, Any]:
    """What must equal an uninterrupted run's."""
    with Registry.open(home, tracking_uri="none") as reg:
        tasks = [t.name for t in reg.tasks()]
        evals = sorted(
            (e.task, e.method, e.stream, e.position, round(e.value, 6), e.predictions_sha256)
            for t in tasks
            for e in reg.history(t)
        )
        arrivals = sorted((a.stream, a.method, a.position, a.task, a.status) for a in reg.streams.arrivals())  # fmt: skip
        prefixes = sorted((p.task, p.version, p.sha256, p.status, p.is_current) for t in tasks for p in reg.prefixes(t, limit=1000))  # fmt: skip
        jobs = sorted((j.stream, j.task, j.state) for j in reg.queue.list(limit=500))
        mirrored = sorted(
            (p.task, p.version, p.mlflow_run_id is not None)
            for t in tasks
            for p in reg.prefixes(t, limit=1000)
        )
    return {"evals": evals, "arrivals": arrivals, "prefixes": prefixes, "jobs": jobs,
            "mirrored": mirrored, "mlflow_runs": _mlflow_runs(home)}  # fmt: skip


def _mlflow_runs(home: Path) -> list[tuple[str, int]]:
    """(prefix id, active runs for it) in the workspace's MLflow store, if it has one."""
    if not (home / "mlflow.db").exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string="tags.`continual.prefix_id` != ''") if ids else []
    counts: dict[str, int] = {}
    for r in runs:
        pid = r.data.tags.get("continual.prefix_id", "")
        counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts.items())


def check_clean(home: Path) -> list[str]:
    """`registry check` finds no problem (young leftovers allowed), and repair leaves it clean."""
    out = json.loads(run("registry", "check", "--json", "--home", home, "--tracking-uri", "none", ok=(0, 1)))  # fmt: skip
    problems = [f"{k}: {out[k]}" for k in ("missing", "corrupt", "orphans") if out[k]]
    with Registry.open(home, tracking_uri="none") as reg:
        reg.check(repair=True, grace_s=0)
        after = reg.check(grace_s=0)
    if not after.ok or after.recent_orphans:
        problems.append(f"after repair: {after}")
    return problems


def kill_at(argv: list, delay: float, env: dict, companion: list | None) -> str:
    """Run `argv` (and `companion` beside it); SIGKILL `argv` after `delay` s if still running.
    Returns how far it got: 'killed' or 'finished'."""
    procs = []
    if companion is not None:
        procs.append(subprocess.Popen(cli_argv(*companion), cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    child = subprocess.Popen(cli_argv(*argv), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + delay
    try:
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        outcome = "finished" if child.poll() is not None else "killed"
        if outcome == "killed":
            os.kill(child.pid, signal.SIGKILL)
    finally:
        for p in [child, *procs]:
            try:
                p.wait(timeout=600)
            except subprocess.TimeoutExpired:
                p.kill()
    return outcome


def serve_arrival(files: Path) -> Callable[[Path, float | None, dict], tuple[str, float, float]]:
    """The server's scenario: start `serve` on the workspace, upload a task's files and queue
    its arrival in stream `s`; kill -9 the server `delay` s after the 202 (None: wait until the
    job is done, then stop it as a user would). Kills are timed from the 202."""

    def drive(home: Path, delay: float | None, env: dict) -> tuple[str, float, float]:
        server = Server(home, home.parent / f"{home.name}-serve.log", env=env)
        server.start()
        try:
            with open(files / "good-train.jsonl", "rb") as t, open(files / "good-eval.jsonl", "rb") as e:  # fmt: skip
                up = server.post("/v1/datasets", files={"train": t, "eval": e})
            assert up.status_code == 201, up.text
            body = {"name": "t9", "dataset": up.json()["id"], "options": SERVED}
            r = server.post("/v1/streams/s/arrivals", json=body)
            assert r.status_code == 202, r.text
            job, accepted = r.json()["job"]["id"], time.monotonic()
            if delay is None:
                assert server.wait_done(job, poll=0.05)["state"] == "done"
                return "finished", 0.0, time.monotonic() - accepted
            while time.monotonic() < accepted + delay and server.job(job)["state"] != "done":
                time.sleep(0.05)
            outcome = "finished" if server.job(job)["state"] == "done" else "killed"
            server.kill()
            return outcome, 0.0, time.monotonic() - accepted
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop()

    return drive


def serve_until_idle(home: Path) -> None:
    """Start the server again and stop it once no job is queued or running."""
    server = Server(home, home.parent / f"{home.name}-serve.log")
    server.start()
    try:
        deadline = time.monotonic() + 300
        while True:
            with Registry.open(home, tracking_uri="none") as reg:
                busy = [j for j in reg.queue.list(limit=500) if j.state in ("queued", "running")]
            if not busy:
                break
            assert time.monotonic() < deadline, f"jobs still {busy}"
            time.sleep(0.2)
    finally:
        assert server.stop() == 0, server.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def world(tmp_path_factory, base_home: Path, tiny_encoder_dir: Path) -> dict[str, Path]:
    """The files every scenario reads: task data, a stream file, an exported prefix."""
    from tests.chaos.test_bad_input import write_files

    root = tmp_path_factory.mktemp("kills")
    files = root / "files"
    write_files(files)
    (files / "stream.yaml").write_text(
        f"name: k\nbackbone: {tiny_encoder_dir}\n"
        "defaults: {steps: 16, lr: 1.0e-2, prefix_length: 4, eval_every: 8, batch_size: 8}\n"
        "baselines: [sequential-ft]\narrivals:\n"
        "  - {name: k1, train: good-train.jsonl, eval: good-eval.jsonl}\n"
        "  - {name: k2, train: good-train.jsonl, eval: good-eval.jsonl, seed: 1}\n"
    )
    run("registry", "export", "t1", "--format", "safetensors", "--out", files / "export",
        "--home", base_home, "--tracking-uri", "none")  # fmt: skip
    return {"files": files, "base": base_home, "encoder": tiny_encoder_dir}


def scenarios(w: dict[str, Path]) -> dict[str, Scenario]:
    F, E, base = w["files"], w["encoder"], w["base"]
    none = ("--tracking-uri", "none", "--quiet")
    data = ("--train", F / "good-train.jsonl", "--eval", F / "good-eval.jsonl")

    def copy_base(h: Path) -> None:
        shutil.copytree(base, h, dirs_exist_ok=True)

    def queued(h: Path) -> None:
        copy_base(h)
        for name in ("t9", "t10"):
            run("learn", "--backbone", E, "--stream", "s", "--name", name, *data, *TRAIN,
                "--queue", "--home", h, *none)  # fmt: skip

    def damaged(h: Path) -> None:
        copy_base(h)
        with Registry.open(h, tracking_uri="none") as reg:
            path = h / reg.prefix("t2").artifact_path
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1
        path.write_bytes(bytes(raw))
        orphan = h / "artifacts" / "00" / ("0" * 64 + ".safetensors")
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"left over")
        os.utime(orphan, (time.time() - 86400 * 3,) * 2)

    def with_mlflow(h: Path) -> None:
        from mlflow.tracking import MlflowClient

        copy_base(h)
        MlflowClient(tracking_uri=f"sqlite:///{h / 'mlflow.db'}").search_experiments()

    stream = ("stream", "run", F / "stream.yaml")
    learn = ("learn", "--backbone", E, "--stream", "s", "--name", "t9", *data, *TRAIN)
    train = ("train", "--backbone", E, "--name", "t9", *data, *TRAIN)
    worker = ("worker", "--until-empty", "--poll", "0.2")

    def sync(h: Path) -> list:
        return ["registry", "sync-mlflow", "--home", h, "--tracking-uri", f"sqlite:///{h / 'mlflow.db'}"]  # fmt: skip

    def again(*argv: Any, ok: tuple[int, ...] = (0,)) -> Callable[[Path], None]:
        return lambda h: (run(*argv, "--home", h, *none, ok=ok), None)[1]

    def at(*argv: Any) -> Callable[[Path], list]:
        return lambda h: [*argv, "--home", h, *none]

    return {
        "stream run": Scenario("stream run", lambda h: None, at(*stream), again(*stream)),
        "learn": Scenario("learn", copy_base, at(*learn), again(*learn, ok=(0, 2))),
        "train": Scenario("train", copy_base, at(*train), again(*train, ok=(0, 2))),
        "worker": Scenario("worker", queued, at(*worker), again(*worker)),
        "two workers": Scenario(
            "two workers", queued, at(*worker), again(*worker), companion=at(*worker)
        ),  # fmt: skip
        "serve": Scenario(
            "serve", copy_base, lambda h: [], serve_until_idle, drive=serve_arrival(F)
        ),  # fmt: skip
        "registry import": Scenario(
            "registry import",
            lambda h: None,
            at("registry", "import", F / "export"),
            again("registry", "import", F / "export", ok=(0, 2)),
        ),  # fmt: skip
        "check --repair": Scenario(
            "check --repair",
            damaged,
            at("registry", "check", "--repair"),
            again("registry", "check", "--repair", ok=(0, 1)),
        ),  # fmt: skip
        "sync-mlflow": Scenario(
            "sync-mlflow", with_mlflow, sync, lambda h: (run(*sync(h)), None)[1]
        ),  # fmt: skip
    }


@pytest.mark.parametrize("name", list(KILLS))
def test_kill_9_at_random_moments_changes_nothing_but_time(
    name: str, world: dict[str, Path], drill: Callable, drills: dict, tmp_path: Path
) -> None:
    d = drills.get("kill -9") or drill(
        "kill -9",
        "after a rerun: rows, scores and prediction hashes equal an uninterrupted run's, each "
        "job done exactly once, one MLflow run per prefix, `registry check` clean",
    )
    if not FULL and name not in QUICK:
        pytest.skip(f"{name}: killed at full scale only (make chaos); quick kills {QUICK}")
    s = scenarios(world)[name]
    env = {**child_env(), **s.env}
    template = tmp_path / "template"
    template.mkdir()
    s.setup(template)
    ref = tmp_path / "reference"
    shutil.copytree(template, ref)
    outcome, first, length = s.once(ref, None, env)
    assert outcome == "finished"
    s.recover(ref)
    want = snapshot(ref)
    rng = random.Random(f"{SEED}-{name}")
    n = scaled(1, KILLS[name])
    start, span = first, 1.1 * length - first  # from the first write to past the end
    for i in range(n):
        # one kill (quick scale) lands in the middle of the work; more spread over all of it
        delay = start + span * ((i + rng.random()) / n if n > 1 else 0.45)
        home = tmp_path / f"case-{i}"
        shutil.copytree(template, home)
        outcome, _, _ = s.once(home, delay, env)
        problems: list[str] = []
        try:
            s.recover(home)
            got = snapshot(home)
            problems += [f"{k} differ: {got[k]} != {want[k]}" for k in want if got[k] != want[k]]
            problems += check_clean(home)
        except AssertionError as e:
            problems.append(str(e)[:600])
        d.case(f"{name}: kill at {delay:.1f} s of {length:.1f} s", not problems,
               "; ".join(problems) or outcome, outcome=outcome)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
    d.extra.setdefault("run_seconds", {})[name] = round(length, 1)
    d.extra.setdefault("first_write_seconds", {})[name] = round(first, 1)
    mine = [c for c in d.failures if c["id"].startswith(f"{name}:")]
    assert not mine, "\n".join(f"{c['id']}: {c['seen']}" for c in mine)
