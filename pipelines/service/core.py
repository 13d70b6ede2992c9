"""What the routes share: the service's state, its error types and their statuses, the
one-line error body, and the authentication dependency `need(scope)`.

Every error is one JSON line: `{"error": "...", "field": ..., "row": ...}` with a 4xx status
(a user's mistake, in the CLI's own words) or a 500 whose body says only that it was logged;
no traceback or path outside the workspace ever reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipelines.service.answers import Answerer
from pipelines.service.auth import Caller, Gate, RateLimit
from pipelines.service.batching import MicroBatcher
from pipelines.service.config import ServeSettings
from pipelines.service.metrics import Metrics
from pipelines.service.uploads import where_in
from pipelines.settings import RegistryArgs
from registry import Registry
from tasks.errors import ContinualError, IntegrityError

log = logging.getLogger("continual.serve")
VERSION = "1"


class NotFound(ContinualError):
    """Something a request names is not there (404)."""


class Conflict(ContinualError):
    """A request that the current state refuses (409), e.g. cancelling a running job."""


class Refused(ContinualError):
    """A request over a limit (413, 429), with its status."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def dataset_id(value: str) -> str:
    """`value` if it can be a dataset id (64 lowercase hex digits), else a 404 in one line."""
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise NotFound(
            f"dataset {value[:80]!r} is not an id (64 hex digits from POST /v1/datasets)"
        )
    return value


class Service:
    """What the routes share: the registry, the answerer and its batcher, the gate, metrics."""

    def __init__(self, registry: RegistryArgs, settings: ServeSettings) -> None:
        self.registry, self.settings = registry, settings
        self.reg: Registry = registry.open()
        self.answerer = Answerer(self.reg, settings.backbone)
        self.metrics = Metrics(self.reg, lambda: self.batcher.depth)
        self.batcher = MicroBatcher(
            self.answerer.answer,
            mode=settings.batching,
            window_s=settings.batch_window_ms / 1000,
            max_batch=settings.max_batch,
            on_batch=self.metrics.batch,
        )
        self.gate = Gate(self.reg)
        self.rate = RateLimit(settings.rate)
        self.ready = asyncio.Event()
        self.load_error: str | None = None
        self.started = time.time()
        self._tasks: set[str] = set()  # tasks seen to exist (a task is never deleted)

    def seen(self, name: str) -> bool:
        """Whether `name` is known to be a task already (no query)."""
        return name in self._tasks

    def has_task(self, name: str) -> bool:
        """Whether `name` is a task of the registry: one query until it is seen once."""
        if name not in self._tasks and self.reg.has_task(name):
            self._tasks.add(name)
        return name in self._tasks

    async def load(self) -> None:
        """Load the backbone (on the batcher's thread) and say ready."""
        try:
            await self.batcher.run(self.answerer.load)
        except ContinualError as e:
            self.load_error = str(e)
            log.error("cannot load the backbone: %s", e)
            return
        self.ready.set()
        bb = self.answerer.backbone
        log.info("ready: backbone %s", bb.name if bb is not None else "(none yet: no tasks)")

    def close(self) -> None:
        self.reg.close()


def status_of(e: ContinualError) -> int:
    if isinstance(e, NotFound) or "is not in the registry" in str(e):
        return 404
    if isinstance(e, Conflict | IntegrityError):
        return 409
    if isinstance(e, Refused):
        return e.status
    return 422


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    line = " ".join(str(message).split())  # one line, whatever the message held
    body = {"error": line, "field": None, "row": None, **where_in(line), **extra}
    return JSONResponse(body, status_code=status)


bearer = HTTPBearer(auto_error=False, description="a token from `continual tokens create`")
BEARER = Depends(bearer)


def authorize(request: Request, scope: str) -> Caller:
    """The caller of `request`, if it may `scope` (read|write) and is within its rate; else
    `Denied` (401/403) or `Refused` (429)."""
    service: Service = request.app.state.service
    header = request.headers.get("authorization") or _cookie_token(request)
    client = request.client.host if request.client else "unknown"
    caller = service.gate.check(header, client, scope)
    wait = service.rate.take(caller.key)
    if wait > 0:
        raise Refused(
            429,
            f"too many requests: over {service.settings.rate:g} a second for this "
            f"{'token' if caller.key.startswith('token:') else 'client'}; retry shortly",
            retry_after=wait,
        )
    return caller


def need(scope: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: `authorize` for `scope`, on the event loop (no thread hop a request: the
    token checks it may query are cached for 2 s)."""

    async def check(
        request: Request, credentials: HTTPAuthorizationCredentials | None = BEARER
    ) -> Caller:
        # the raw header is read (`credentials` only documents the scheme in the OpenAPI)
        return authorize(request, scope)

    return check


def _cookie_token(request: Request) -> str | None:
    token = request.cookies.get("continual_token")
    return f"Bearer {token}" if token else None
