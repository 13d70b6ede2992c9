"""Torch threads for an arrival: the user's number, else the cores idle now (not the lagging load
average), on the CPUs of this process's affinity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pipelines.settings import ThreadChoice, pick_threads, user_threads
from pipelines.threads import cpu_times, idle_cores, measure_idle
from tasks.errors import ConfigError

# Two samples of a 2-CPU machine 0.25 s apart: cpu0 idle 20 of 25 ticks, cpu1 idle 25 of 25.
BEFORE = """cpu  2000 0 400 9000 10 0 5 100 0 0
cpu0 1000 0 200 4500 5 0 2 50 0 0
cpu1 1000 0 200 4500 5 0 3 50 0 0
intr 1 2 3
ctxt 99
"""
AFTER = """cpu  2005 0 400 9045 10 0 5 100 0 0
cpu0 1005 0 200 4520 5 0 2 50 0 0
cpu1 1000 0 200 4525 5 0 3 50 0 0
intr 1 2 3
ctxt 120
"""


class FakeStat:
    """A /proc/stat that moves on at each read."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)

    def read_text(self) -> str:
        return self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch: pytest.MonkeyPatch):
    before = torch.get_num_threads()
    for name in ("CONTINUAL_THREADS", "OMP_NUM_THREADS"):  # tests/conftest.py sets OMP_NUM_THREADS
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def test_cpu_times_and_idle_cores_on_literal_samples() -> None:
    assert cpu_times(BEFORE, None) == {0: (4505, 5757), 1: (4505, 5758)}
    assert cpu_times(BEFORE, {1}) == {1: (4505, 5758)}
    assert idle_cores(cpu_times(BEFORE, None), cpu_times(AFTER, None)) == pytest.approx(1.8)
    assert idle_cores(cpu_times(BEFORE, {1}), cpu_times(AFTER, {1})) == pytest.approx(1.0)


def test_a_fresh_machine_with_a_high_load_average_gets_its_idle_cores(monkeypatch) -> None:
    """The install has just pushed the 1-minute load average to 2.5 on 2 cores, but both cores
    are idle now: the arrival gets 2 threads, not 1."""
    monkeypatch.setattr(os, "getloadavg", lambda: (2.5, 1.0, 0.5))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    choice = pick_threads(busy=False, window_s=0, stat=FakeStat(BEFORE, AFTER))
    assert choice == ThreadChoice(threads=2, source="idle-cpu", idle_cores=1.8, cpus=2)
    assert torch.get_num_threads() == 2


def test_the_affinity_limits_the_cpus_counted(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    choice = pick_threads(busy=False, window_s=0, stat=FakeStat(BEFORE, AFTER))
    assert (choice.threads, choice.source, choice.cpus) == (1, "idle-cpu", 1)


def test_busy_cpus_give_one_thread(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    busy = AFTER.replace("cpu0 1005 0 200 4520", "cpu0 1024 0 200 4501").replace(
        "cpu1 1000 0 200 4525", "cpu1 1020 0 204 4501"
    )
    choice = pick_threads(busy=True, window_s=0, stat=FakeStat(BEFORE, busy))
    assert choice.threads == 1 and choice.source == "idle-cpu" and choice.idle_cores < 0.5


def test_without_proc_stat_the_load_average_decides(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    choice = pick_threads(busy=False, window_s=0, stat=tmp_path / "no-such-stat")
    assert choice == ThreadChoice(threads=4, source="loadavg", idle_cores=3.6, cpus=4)


def test_the_users_number_wins(monkeypatch) -> None:
    monkeypatch.setenv("CONTINUAL_THREADS", "3")
    choice = pick_threads(busy=False, window_s=0, stat=FakeStat(BEFORE, AFTER))
    assert (choice.threads, choice.source, choice.idle_cores) == (3, "user", None)
    assert torch.get_num_threads() == 3
    monkeypatch.delenv("CONTINUAL_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    choice = pick_threads(busy=False, window_s=0, stat=FakeStat(BEFORE, AFTER))
    assert (choice.threads, choice.source) == (1, "user")


@pytest.mark.parametrize("value", ["x", "0", "-1", "2.5"])
def test_a_bad_continual_threads_is_a_config_error(value, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUAL_THREADS", value)
    with pytest.raises(ConfigError, match=r"CONTINUAL_THREADS=.*whole number of 1 or more"):
        pick_threads(busy=False, window_s=0)
    assert user_threads({"CONTINUAL_THREADS": " 2 "}) == 2 and user_threads({}) is None


def test_the_choice_is_a_record_for_the_run() -> None:
    choice = ThreadChoice(threads=2, source="idle-cpu", idle_cores=1.8, cpus=2)
    assert ThreadChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice
    assert "1.8 of 2 CPU(s) idle" in choice.reason
    with pytest.raises(AttributeError):
        choice.threads = 3  # type: ignore[misc]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat here")
def test_the_real_proc_stat_reads() -> None:
    idle = measure_idle(None, window_s=0.05)
    assert idle is not None and 0.0 <= idle <= (os.cpu_count() or 1)
