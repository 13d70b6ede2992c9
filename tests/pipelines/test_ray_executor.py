"""`continual worker --ray`: arrivals as tasks on a real local Ray instance (started by the
worker itself). Two streams of three arrivals run in parallel, a Ray worker process is SIGKILLed
in the middle of an arrival, Ray retries the task, and every job ends `done` once with each
stream's scores and predictions hashes equal to an uninterrupted serial run's.

The test finds the process to kill in the job's live progress in the registry (its phase, and
the `host:pid` running it), not in Ray's forwarded log lines, which Ray's log monitor forwards
late. (An earlier version read them from the stderr pipe in a thread while `communicate()` read
the same pipe: each reader got part of the lines, and a CI run missed the one it waited for.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from registry import Registry
from tests.pipelines.test_workers import _env, matrices, queue_all, write_data

A2 = 2  # a2's place in queue_all's order: a1, b1, a2, b2, a3, b3


def kill_when_training(home: Path, job_id: int, done: threading.Event, killed: list[int]) -> None:
    """SIGKILL the process that runs `job_id` once its live progress says it is in the prefix's
    steps (embed, train, register, re-evaluate); polls the registry every 20 ms."""
    with Registry.open(home, tracking_uri="none") as reg:
        while not done.is_set() and not killed:
            job = reg.queue.get(job_id)
            p = job.progress or {}
            host, _, pid = str(p.get("process", "")).partition(":")
            if job.state == "running" and str(p.get("phase", "")).startswith("prefix · "):
                if host == socket.gethostname() and pid.isdigit():
                    killed.append(int(pid))
                    os.kill(int(pid), signal.SIGKILL)  # the Ray worker process running a2
                    return
            time.sleep(0.02)


@pytest.mark.slow
def test_two_streams_on_ray_equal_a_serial_run_with_a_ray_worker_killed(
    serial,
    tmp_path: Path,
    tiny_encoder_dir: Path,
    sentiment,
) -> None:
    pytest.importorskip("ray", reason="ray is a dev dependency (make install)")
    home = tmp_path / "home"
    write_data(tmp_path / "data", sentiment)
    jobs = queue_all(home, None, tmp_path / "data", tiny_encoder_dir)
    args = [sys.executable, "-m", "pipelines.cli", "worker", "--ray", "--until-empty"]
    args += ["--poll", "0.5", "--lease", "60", "--parallel", "2", "--home", str(home)]
    args += ["--tracking-uri", "none", "--json", "--quiet"]
    env = _env(CONTINUAL_THREADS="1")
    err = tmp_path / "worker.stderr"
    killed: list[int] = []
    finished = threading.Event()
    killer = threading.Thread(
        target=kill_when_training, args=(home, jobs[A2], finished, killed), daemon=True
    )
    with err.open("w") as errors:  # a file: communicate() is the only reader of the pipe
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        killer.start()
        try:
            out, _ = proc.communicate(timeout=900)
        finally:
            finished.set()
            if proc.poll() is None:
                proc.kill()
    killer.join(timeout=10)
    lines = err.read_text(errors="replace").splitlines()
    log = "\n".join(lines[-60:])
    assert proc.returncode == 0, log
    assert killed, f"a2 was never seen in its prefix's steps with a process:\n{log}"
    outcomes = json.loads(out)["jobs"]
    by_task = {o["task"]: o for o in outcomes if o["state"] == "done"}
    assert sorted(by_task) == ["a1", "a2", "a3", "b1", "b2", "b3"], outcomes
    assert by_task["a2"]["pid"] != killed[0]  # Ray retried it in another worker process
    with Registry.open(home, tracking_uri="none") as reg:
        ended = [reg.queue.get(j) for j in jobs]
        assert all(j.state == "done" for j in ended), ended
        assert [p.version for p in reg.prefixes(task="a2")] == [1]  # registered once
    got = matrices(home, None)
    assert got == serial  # every row once, the same scores and hashes as the serial run


@pytest.mark.parametrize(
    ("executor", "address"),
    [
        ("local", None),
        ("ray", ""),
        ("ray:auto", "auto"),
        ("ray:ray://head:10001", "ray://head:10001"),
    ],
)
def test_executor_names(executor: str, address: str | None) -> None:
    from pipelines.stream import executor_address

    assert executor_address(executor, "s.yaml") == address


@pytest.mark.parametrize("executor", ["dask", "local:x", "Ray"])
def test_a_bad_executor_is_one_clear_line(executor: str) -> None:
    from pipelines.stream import executor_address
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError, match=r"s.yaml: executor must be local, ray .*ray:ADDRESS"):
        executor_address(executor, "s.yaml")


@pytest.mark.slow
def test_a_stream_file_with_executor_ray_equals_the_local_run(
    tmp_path: Path, tiny_encoder_dir: Path, sentiment
) -> None:
    pytest.importorskip("ray", reason="ray is a dev dependency (make install)")
    from tests.pipelines.test_stream_run import TASKS, child, stream_file, write_tasks

    data = tmp_path / "data"
    write_tasks(data, sentiment, TASKS[:2])
    path = stream_file(data, tiny_encoder_dir, "[]", TASKS[:2])
    reports = {}
    for executor in ("local", "ray"):
        home = tmp_path / executor
        done = child("stream", "run", path, "--home", home, "--executor", executor, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["arrivals"][-1]["position"] == 1
        reports[executor] = json.loads((home / "report" / "report.json").read_text())
    local, ray = (reports[k]["methods"]["prefix"] for k in ("local", "ray"))
    assert ray["R"] == local["R"]
    assert reports["ray"]["evidence"]["predictions"] == reports["local"]["evidence"]["predictions"]
