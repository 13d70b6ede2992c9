"""The router is fitted once per registry generation: a second `AutoPredictor` (in this process
or the next) does not refit, and adding a task changes the generation and refits."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from continual.routing import Router, route_method
from pipelines import router_cache
from pipelines.serve import AutoPredictor
from registry import NullTracker, Registry

ROOT = Path(__file__).resolve().parents[2]
DIM = 12


def _testkit() -> Any:
    if "registry_testkit" not in sys.modules:
        path = ROOT / "tests" / "registry" / "registry_testkit.py"
        spec = importlib.util.spec_from_file_location("registry_testkit", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["registry_testkit"] = module
        spec.loader.exec_module(module)
    return sys.modules["registry_testkit"]


BACKBONE = SimpleNamespace(name="tiny-random", fingerprint="f" * 64)


def add_task(reg: Registry, name: str, seed: int) -> None:
    """A task whose routing keys cluster around its own random centre."""
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=DIM) * 3 + rng.normal(size=(40, DIM))
    embeddings = {route_method(BACKBONE): keys.astype(np.float32)}  # type: ignore[arg-type]
    _testkit().register(reg, name, seed=seed, embeddings=embeddings)


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts logistic-regression fits (the router's refits)."""
    from sklearn.linear_model import LogisticRegression

    calls: list[int] = []
    real = LogisticRegression.fit

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counting)
    router_cache.forget_memory()
    yield calls
    router_cache.forget_memory()


@pytest.fixture
def reg(tmp_path: Path):
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as r:
        for i, name in enumerate(("alpha", "beta", "gamma")):
            add_task(r, name, seed=i)
        yield r


def test_a_second_predictor_does_not_refit(reg: Registry, fits: list[int]) -> None:
    first = AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
    assert len(fits) == 1 and first.router.tasks == ["alpha", "beta", "gamma"]
    AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
    assert len(fits) == 1  # from memory
    router_cache.forget_memory()  # as a new process starts
    again = AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
    assert len(fits) == 1  # from the workspace's cache file
    files = list((reg.workspace / "cache").glob("router-*.npz"))
    assert len(files) == 1 and files[0].name.startswith(f"router-{reg.generation()}-")
    x = np.random.default_rng(7).normal(size=(50, DIM)).astype(np.float32) * 3
    a, b = first.router.route(x), again.router.route(x)
    assert np.array_equal(a.task, b.task) and np.array_equal(a.confidence, b.confidence)


def test_a_new_task_changes_the_generation_and_refits(reg: Registry, fits: list[int]) -> None:
    AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
    before = reg.generation()
    assert reg.generation() == before  # stable while nothing changes
    add_task(reg, "delta", seed=3)
    assert reg.generation() != before
    predictor = AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
    assert len(fits) == 2 and "delta" in predictor.router.tasks
    names = [p.name for p in (reg.workspace / "cache").glob("router-*.npz")]
    assert len(names) == 1 and names[0].startswith(f"router-{reg.generation()}-")
    # a subset of the tasks is another router, fitted once too
    AutoPredictor(reg, BACKBONE, ["alpha", "beta"])  # type: ignore[arg-type]
    AutoPredictor(reg, BACKBONE, ["beta", "alpha"])  # type: ignore[arg-type]
    assert len(fits) == 3


def test_a_repair_changes_the_generation(reg: Registry) -> None:
    before = reg.generation()
    record = reg.prefix("beta")
    (reg.workspace / record.artifact_path).unlink()
    reg.check(repair=True)
    assert reg.generation() != before


def test_a_damaged_cache_file_is_refitted(reg: Registry, fits: list[int]) -> None:
    AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
    (path,) = (reg.workspace / "cache").glob("router-*.npz")
    path.write_bytes(b"not a zip file")
    router_cache.forget_memory()
    assert AutoPredictor(reg, BACKBONE).router.tasks == ["alpha", "beta", "gamma"]  # type: ignore[arg-type]
    assert len(fits) == 2


def test_another_process_reads_the_cache(reg: Registry, fits: list[int]) -> None:
    AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
    script = textwrap.dedent(
        f"""
        from types import SimpleNamespace
        from sklearn.linear_model import LogisticRegression
        from pipelines.serve import AutoPredictor
        from registry import NullTracker, Registry
        calls = []
        real = LogisticRegression.fit
        LogisticRegression.fit = lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1]
        bb = SimpleNamespace(name="tiny-random", fingerprint="f" * 64)
        with Registry.open({str(reg.workspace)!r}, tracker=NullTracker()) as reg:
            print(len(calls), AutoPredictor(reg, bb).router.tasks, len(calls))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "0 ['alpha', 'beta', 'gamma'] 0"


def test_router_state_round_trips_a_single_task_router() -> None:
    one = Router({"only": np.ones((3, DIM), np.float32)})
    back = Router.restore(one.state())
    assert back.tasks == ["only"] and back.model is None and back.dim == DIM
