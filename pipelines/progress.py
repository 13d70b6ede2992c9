"""Progress of an arrival on stderr: one line when a step starts, one with its time when it ends."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Progress:
    """`say` a line, or time a `step`: `[2/5] trec · prefix · train (100 steps)`."""

    def __init__(
        self,
        say: Callable[[str], None] = to_stderr,
        on_phase: Callable[[str], None] | None = None,
    ) -> None:
        self.say = say
        self.on_phase = on_phase  # hears each step's name as it starts (a job's live progress)

    @contextlib.contextmanager
    def step(self, tag: str, what: str) -> Iterator[None]:
        self.say(f"{tag} · {what}")
        if self.on_phase is not None:
            self.on_phase(what)
        started = time.perf_counter()
        yield
        self.say(f"{tag} · {what} · {time.perf_counter() - started:.1f} s")
