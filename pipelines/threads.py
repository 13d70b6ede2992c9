"""How many torch threads an arrival gets: the user's number, else the cores really idle now.

On a machine shared with other work, a thread pool larger than the idle cores runs slower than
one thread (measured here: 0.8-1.5 s per minilm step with 1 thread against 2.2-3.1 s with 2, at
load 3-4 on 2 cores). The count used to follow the 1-minute load average, which lags: right
after `pip install` on a fresh machine it still read ~2 on an idle 2-core box, and the first
arrival of `make demo` ran one thread. So the count now follows the CPU idle time measured over
a short window (`/proc/stat`, `WINDOW_S`), on the CPUs this process may run on (its affinity),
and falls back to the load average only where `/proc/stat` is missing (macOS, BSD). Evaluation
gives bitwise the same outputs with 1 or 2 threads (checked on minilm), so re-evaluations still
reproduce their predictions whatever is chosen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError

ENV = "CONTINUAL_THREADS"
WINDOW_S = 0.25
PROC_STAT = Path("/proc/stat")
SOURCES = ("user", "idle-cpu", "loadavg")


@dataclass(frozen=True)
class ThreadChoice:
    """The torch thread count chosen for an arrival and why.

    `source`: "user" (CONTINUAL_THREADS, or OMP_NUM_THREADS which torch reads itself),
    "idle-cpu" (idle cores measured from /proc/stat) or "loadavg" (the 1-minute load average);
    `idle_cores`: the idle cores measured (None when the user chose); `cpus`: the CPUs this
    process may use (its affinity).
    """

    threads: int
    source: str
    idle_cores: float | None
    cpus: int

    def __post_init__(self) -> None:
        if self.threads < 1 or self.source not in SOURCES:
            raise ValueError(f"bad thread choice {self!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThreadChoice:
        return cls(**{k: d[k] for k in ("threads", "source", "idle_cores", "cpus")})

    @property
    def reason(self) -> str:
        if self.source == "user":
            return "set by the user"
        what = "idle" if self.source == "idle-cpu" else "free by the load average"
        return f"{self.idle_cores:.1f} of {self.cpus} CPU(s) {what}"


def user_threads(env: Mapping[str, str] | None = None) -> int | None:
    """CONTINUAL_THREADS as a number, None when unset or empty; a ConfigError when it is not a
    whole number of 1 or more."""
    raw = (os.environ if env is None else env).get(ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(
            f"{ENV}={raw!r} is not a thread count: give a whole number of 1 or more (e.g. "
            f"{ENV}=2), or unset it to let continual choose from the idle CPUs"
        )
    return n


def allowed_cpus() -> set[int] | None:
    """The CPU numbers this process may run on (None where the OS does not say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def cpu_times(text: str, cpus: set[int] | None) -> dict[int, tuple[int, int]]:
    """(idle ticks, total ticks) per CPU of a `/proc/stat` text, only CPUs in `cpus` if given.

    Idle counts `idle` and `iowait`; the total counts every state up to `steal` (time a
    hypervisor gave to another guest is not ours to use). `guest` time is already in `user`.
    """
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu = int(name[3:])
            ticks = [int(x) for x in rest.split()[:8]]
        except ValueError:
            continue
        if cpus is not None and cpu not in cpus:
            continue
        ticks += [0] * (8 - len(ticks))
        out[cpu] = (ticks[3] + ticks[4], sum(ticks))
    return out


def idle_cores(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """The number of cores idle between two `cpu_times` samples (a CPU with no ticks counts 0)."""
    idle = 0.0
    for cpu, (idle1, total1) in after.items():
        if cpu not in before:
            continue
        idle0, total0 = before[cpu]
        if total1 > total0:
            idle += min(1.0, max(0.0, (idle1 - idle0) / (total1 - total0)))
    return idle


def measure_idle(
    cpus: set[int] | None, *, window_s: float = WINDOW_S, stat: Path = PROC_STAT
) -> float | None:
    """Idle cores among `cpus` over `window_s` seconds, None where `stat` cannot be read."""
    try:
        before = cpu_times(stat.read_text(), cpus)
        time.sleep(window_s)
        after = cpu_times(stat.read_text(), cpus)
    except OSError:
        return None
    if not after:
        return None
    return idle_cores(before, after)


def pick_threads(*, busy: bool, window_s: float = WINDOW_S, stat: Path = PROC_STAT) -> ThreadChoice:
    """Choose (and set) torch's intra-op threads for the next arrival.

    The user's CONTINUAL_THREADS wins (and OMP_NUM_THREADS, which torch has read itself: kept as
    is). Otherwise the idle cores over `window_s` on the CPUs of this process's affinity, rounded,
    at least 1; where `stat` is missing, the CPUs less the 1-minute load average, less our own
    threads when we were `busy` (the load average counts them; an idle sample taken between
    arrivals does not).
    """
    import torch

    cpus = allowed_cpus()
    n_cpus = len(cpus) if cpus else (os.cpu_count() or 1)
    forced = user_threads()
    if forced is not None:
        torch.set_num_threads(forced)
        return ThreadChoice(threads=forced, source="user", idle_cores=None, cpus=n_cpus)
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        threads = max(1, torch.get_num_threads())
        return ThreadChoice(threads=threads, source="user", idle_cores=None, cpus=n_cpus)
    idle = measure_idle(cpus, window_s=window_s, stat=stat)
    source = "idle-cpu"
    if idle is None:
        source = "loadavg"
        others = os.getloadavg()[0] - (torch.get_num_threads() if busy else 0)
        idle = max(0.0, n_cpus - others)
    n = max(1, min(n_cpus, round(idle)))
    torch.set_num_threads(n)
    return ThreadChoice(threads=n, source=source, idle_cores=round(idle, 2), cpus=n_cpus)
