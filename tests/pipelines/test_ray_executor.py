"""`continual worker --ray`: arrivals as tasks on a real local Ray instance (started by the
worker itself). Two streams of three arrivals run in parallel, a Ray worker process is SIGKILLed
in the middle of an arrival, Ray retries the task, and every job ends `done` once with each
stream's scores and predictions hashes equal to an uninterrupted serial run's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from registry import Registry
from tests.pipelines.test_workers import (  # noqa: F401 - `serial` is a fixture
    _env,
    matrices,
    queue_all,
    serial,
    write_data,
)

TRIGGER = "[alpha 2] a2 · prefix"


@pytest.mark.slow
def test_two_streams_on_ray_equal_a_serial_run_with_a_ray_worker_killed(
    serial,
    tmp_path: Path,
    tiny_encoder_dir: Path,
    sentiment,  # noqa: F811 - the fixture
) -> None:
    pytest.importorskip("ray", reason="ray is a dev dependency (make install)")
    home = tmp_path / "home"
    write_data(tmp_path / "data", sentiment)
    jobs = queue_all(home, None, tmp_path / "data", tiny_encoder_dir)
    args = [sys.executable, "-m", "pipelines.cli", "worker", "--ray", "--until-empty"]
    args += ["--poll", "0.5", "--lease", "60", "--parallel", "2", "--home", str(home)]
    args += ["--tracking-uri", "none", "--json", "--quiet"]
    env = _env(CONTINUAL_THREADS="1", RAY_DEDUP_LOGS="0")
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    killed: list[int] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            found = re.search(r"pid=(\d+)", line)
            if TRIGGER in line and found and not killed:
                killed.append(int(found.group(1)))
                os.kill(killed[0], signal.SIGKILL)  # the Ray worker process running a2

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    log = "\n".join(lines[-60:])
    assert proc.returncode == 0, log
    assert killed, f"no line {TRIGGER!r} from a Ray worker:\n{log}"
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
