"""The server's settings: every limit and batching choice in one place, with its reason."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tasks.errors import ConfigError

BATCHING = ("mixed", "task", "off")


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: in-process arrival workers: one keeps a single-machine service learning while it answers
    #: (0 leaves jobs to `continual worker` processes elsewhere)
    workers: int = 1
    backbone: str | None = None
    #: mixed: one pass over every request gathered (tasks mixed in the batch); task: one pass
    #: per task among them; off: one pass per request (the benchmarks' reference)
    batching: str = "mixed"
    #: how long the first request of a micro-batch waits for others: 2 ms, a tenth of one
    #: backbone pass on 2 cores, so a lone request barely waits; under load it hardly matters,
    #: as requests queue up while the previous pass runs and form the next batch
    batch_window_ms: float = 2.0
    #: the most inputs gathered into one micro-batch (a request larger than this runs alone)
    max_batch: int = 64
    #: inputs one predict request may carry
    max_inputs: int = 256
    #: a dataset upload's largest size (train and eval together), in MB
    max_upload_mb: float = 200.0
    #: requests per second per token (or per client address without tokens), burst twice that
    rate: float = 50.0
    #: allow serving without tokens on a non-loopback address
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if self.batching not in BATCHING:
            raise ConfigError(f"--batching must be one of {', '.join(BATCHING)}")
        if self.batch_window_ms < 0:
            raise ConfigError(f"--batch-window-ms must be 0 or more, got {self.batch_window_ms}")
        for name in ("max_batch", "max_inputs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be above 0, got {self.max_upload_mb}")
        if not self.rate > 0:
            raise ConfigError(f"--rate-limit must be above 0, got {self.rate}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1-65535, got {self.port}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
