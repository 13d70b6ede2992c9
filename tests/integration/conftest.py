"""Fixtures for the end-to-end tests: the `continual` command run in this process or as a child
process, small JSONL task files, and a workspace environment free of the user's settings.

The tiny random backbones (`tiny_encoder_dir`, ...) and the `sentiment` row maker come from the
suite's root conftest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Settings that would send a run somewhere other than the workspace the test names.
_FOREIGN_ENV = ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI")


@dataclass(frozen=True)
class CliResult:
    """One `continual` invocation: exit code, stdout parsed as JSON (None if it is not JSON),
    and stderr's non-empty lines."""

    rc: int
    out: Any
    stdout: str
    err: list[str]


def _parse(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return None


@contextlib.contextmanager
def clean_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in _FOREIGN_ENV:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(autouse=True)
def _no_foreign_settings() -> Iterator[None]:
    with clean_env():
        yield


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliResult]:
    """`cli("train", "--home", H, ...)`: `pipelines.cli.main` in this process, output captured.

    In-process runs pay the torch/transformers import once per session instead of per call.
    """
    from pipelines.cli import main

    def run(*argv: str | Path) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with clean_env(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in argv])
        stdout = out.getvalue()
        return CliResult(rc, _parse(stdout), stdout, [x for x in err.getvalue().splitlines() if x])

    return run


def child_env(cache: Path | None = None) -> dict[str, str]:
    """The environment of a `python -m pipelines.cli` child: this checkout on the path, the
    user's workspace settings removed, one intra-op thread (inherited from the root conftest)."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if cache is not None:
        env["CONTINUAL_CACHE"] = str(cache)
    return env


@pytest.fixture
def child_environ() -> dict[str, str]:
    """`child_env()` as a fixture, for tests that start children themselves."""
    return child_env()


@pytest.fixture(scope="session")
def cli_command() -> list[str]:
    return [sys.executable, "-m", "pipelines.cli"]


@pytest.fixture(scope="session")
def run_child(cli_command: list[str]) -> Callable[..., CliResult]:
    """`run_child(*argv, cache=...)`: `continual ARGV` as a child process (a real exit code)."""

    def run(*argv: str | Path, cache: Path | None = None, timeout: float = 300) -> CliResult:
        done = subprocess.run(
            [*cli_command, *(str(a) for a in argv)],
            cwd=ROOT,
            env=child_env(cache),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        err = [x for x in done.stderr.splitlines() if x]
        return CliResult(done.returncode, _parse(done.stdout), done.stdout, err)

    return run


@pytest.fixture(scope="session")
def task_files(tmp_path_factory: pytest.TempPathFactory, sentiment) -> dict[str, Path]:
    """JSONL files of two small separable tasks: `<task>.train` / `<task>.eval` keys.

    "sentiment" has labels positive/negative, "opinion" yes/no (same words, other labels).
    """
    folder = tmp_path_factory.mktemp("task-files")
    files = {}
    for task, labels, seed in (
        ("sentiment", ("positive", "negative"), 1),
        ("opinion", ("yes", "no"), 3),
    ):
        for split, n in (("train", 64), ("eval", 24)):
            path = folder / f"{task}-{split}.jsonl"
            rows = sentiment(n, seed=seed + (split == "eval") * 100, labels=labels)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            files[f"{task}.{split}"] = path
    return files


def train_args(
    backbone: Path | str, files: dict[str, Path], task: str, home: Path, *extra: str
) -> list[str]:
    """Arguments of a short `continual train` of `task` from `files` into workspace `home`."""
    return [
        "train",
        "--backbone",
        str(backbone),
        "--train",
        str(files[f"{task}.train"]),
        "--eval",
        str(files[f"{task}.eval"]),
        "--name",
        task,
        "--home",
        str(home),
        "--json",
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="session")
def train_argv() -> Callable[..., list[str]]:
    return train_args


class Server:
    """`continual serve` as a child process on a free port of 127.0.0.1 (one in-process arrival
    worker, MLflow off), driven over HTTP. `start` returns once /readyz answers 200."""

    def __init__(self, home: Path, log: Path, env: dict[str, str] | None = None) -> None:
        from tests.conftest import free_port

        self.home, self.log, self.port = home, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {**child_env(), "CONTINUAL_LEASE_S": "6"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import httpx

        argv = [sys.executable, "-m", "pipelines.cli", "serve", "--home", str(self.home)]
        argv += ["--port", str(self.port), "--workers", "1", "--tracking-uri", "none"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def get(self, path: str, **kw: Any) -> Any:
        import httpx

        return httpx.get(self.url + path, timeout=120, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        import httpx

        return httpx.post(self.url + path, timeout=300, **kw)

    def job(self, job: int) -> dict[str, Any]:
        return self.get(f"/v1/jobs/{job}").json()["job"]

    def wait_done(self, job: int, timeout: float = 900, poll: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.job(job)
            if got["state"] in ("done", "failed", "cancelled"):
                return got
            assert time.monotonic() < deadline, (got, self.log.read_text()[-3000:])
            time.sleep(poll)
