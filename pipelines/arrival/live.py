"""A running job's live progress in the registry: its phase, and its step and loss in training.

The worker hands `JobProgress.phase` to the arrival's `Progress` (every step's name as it
starts) and `JobProgress.step` to the training loop (every optimizer step). Phases are written
at once; steps at most every `every_s` seconds (and the last one), so progress costs one small
UPDATE a second, not one per step. `GET /v1/jobs/{id}` and the dashboard read it. Every write
names the process doing the work (`process`: `host:pid`): under `worker --ray` that is the Ray
worker running the arrival, not the driver that holds the lease (`worker_id`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from registry import Registry


class JobProgress:
    def __init__(self, reg: Registry, job_id: int, worker: str, every_s: float = 1.0) -> None:
        self.reg, self.job_id, self.worker, self.every_s = reg, job_id, worker, every_s
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.doc: dict[str, Any] = {"phase": "starting", "process": self.process}
        self._written = 0.0

    def phase(self, what: str) -> None:
        self.doc = {"phase": what, "process": self.process}
        self._write()

    def step(self, step: int, steps: int, loss: float) -> None:
        self.doc.update(step=step, steps=steps, loss=round(float(loss), 5))
        if step == steps or time.monotonic() - self._written >= self.every_s:
            self._write()

    def _write(self) -> None:
        self._written = time.monotonic()
        try:
            self.reg.queue.progress(self.job_id, self.worker, dict(self.doc))
        except Exception:  # noqa: BLE001 - progress is advisory: a busy database skips a beat
            pass
