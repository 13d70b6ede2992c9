"""`continual serve`: one process, one registry, the app on uvicorn, N arrival workers.

The workers are threads of this process running `pipelines.arrival.worker.Worker`, the same
loop as `continual worker`, each with its own backbone (training switches dropout on, so the
answering backbone is never shared with a training run). SIGTERM/SIGINT stop uvicorn (requests
in flight are answered) and tell the workers to stop; a running arrival is not waited for: its
job keeps its lease, and the next worker on this machine takes it over at once (its worker's
process is gone) or elsewhere when the lease expires, and finishes it exactly once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from pipelines.service.config import ServeSettings, loopback
from pipelines.settings import RegistryArgs
from tasks.errors import ConfigError

log = logging.getLogger("continual.serve")


def check_exposure(registry: RegistryArgs, settings: ServeSettings) -> int:
    """Refuse to serve without tokens on a non-loopback address (unless --insecure); returns
    how many live tokens there are."""
    active = 0
    if registry.url is not None or registry.home.exists():  # a new workspace holds no token
        with registry.open() as reg:
            active = reg.tokens.active()
    if active == 0 and not loopback(settings.host) and not settings.insecure:
        raise ConfigError(
            f"--host {settings.host} is reachable from other machines and the registry has no "
            "token: create one with `continual tokens create --scope write`, or pass "
            "--insecure to serve without authentication"
        )
    return active


def start_workers(registry: RegistryArgs, n: int) -> list[Any]:
    from pipelines.arrival.worker import Worker

    workers = []
    for k in range(n):
        worker = Worker(registry=registry, progress=False, say=_say, poll_s=1.0)
        thread = threading.Thread(
            target=_work, args=(worker,), name=f"arrival-worker-{k}", daemon=True
        )
        thread.start()
        workers.append(worker)
    return workers


def _work(worker: Any) -> None:
    try:
        worker.serve()
    except Exception:  # noqa: BLE001 - a worker that dies is logged; the server goes on
        log.exception("arrival worker %s stopped", worker.id)


def _say(line: str) -> None:
    log.info("%s", line)


def serve(registry: RegistryArgs, settings: ServeSettings) -> None:
    import uvicorn

    from pipelines.service.app import create_app
    from pipelines.service.core import Service

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    tokens = check_exposure(registry, settings)
    service = Service(registry, settings)
    app = create_app(service)
    workers = start_workers(registry, settings.workers)
    log.info(
        "serving %s on http://%s:%d · %d worker(s) · %s",
        registry.home,
        settings.host,
        settings.port,
        settings.workers,
        f"{tokens} token(s)" if tokens else "no tokens: open to this machine",
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    # uvicorn handles SIGTERM (a graceful shutdown) and then raises it again so the process
    # dies of it; with this no-op as the handler it restores, the process exits 0 instead,
    # after the workers are told to stop and the registry is closed.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for w in workers:
            w.stop()
        service.close()
