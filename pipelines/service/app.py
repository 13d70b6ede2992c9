"""The FastAPI application: the routes of `routes_read`, `routes_write` and `dashboard`, with
the error handlers that turn every failure into the one-line body of `core.error`, and the
middleware that counts requests and their latency for /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.service import dashboard, routes_read, routes_write
from pipelines.service.auth import Denied
from pipelines.service.core import VERSION, Refused, Service, error, log, status_of
from pipelines.service.uploads import TooLarge
from tasks.errors import ContinualError


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        loading = asyncio.get_running_loop().create_task(service.load())
        try:
            yield
        finally:
            loading.cancel()
            await service.batcher.stop()

    app = FastAPI(
        title="continual",
        version=VERSION,
        description="Continual multi-task learning with prefixes on a frozen transformer: "
        "datasets, arrivals, the registry, predictions and reports.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(ContinualError)
    async def _continual(request: Request, e: ContinualError) -> JSONResponse:
        # paths inside the workspace are shown relative to it; nothing outside is ever named
        message = str(e).replace(f"{service.reg.workspace}/", "")
        response = refused(request, status_of(e), message)
        if isinstance(e, Refused) and e.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(e.retry_after)))
        return response

    @app.exception_handler(Denied)
    async def _denied(request: Request, e: Denied) -> JSONResponse:
        response = refused(request, e.status, str(e))
        if e.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(TooLarge)
    async def _large(request: Request, e: TooLarge) -> JSONResponse:
        mb = service.settings.max_upload_mb
        return refused(
            request, 413, f"the upload is over the server's limit of {mb:g} MB (--max-upload-mb)"
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":  # loc holds a character offset, not a field
            why = (first.get("ctx") or {}).get("error", "")
            return refused(request, 422, f"the request body is not valid JSON: {why}".rstrip(": "))
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "the request body"
        message = f"{where}: {first.get('msg')}"
        return refused(request, 422, message, field=loc[-1] if loc else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return refused(request, e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return error(500, "internal error; the server logged it")

    app.add_middleware(Measure, metrics=service.metrics)

    routes_read.add(app, service)
    routes_write.add(app, service)
    dashboard.add(app, service)
    return app


class Measure:
    """Counts every request by method, route and status, and times it (pure ASGI: Starlette's
    BaseHTTPMiddleware costs about a millisecond a request more)."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - began)


def refused(request: Request, status: int, message: str, **extra: Any) -> JSONResponse:
    """The one-line error answer of a refused request, logged (a warning for who-may-do-what
    refusals: no or wrong token, the wrong scope, too large, too fast; else at info)."""
    level = logging.WARNING if status in (401, 403, 413, 429) else logging.INFO
    who = request.client.host if request.client else "-"
    line = " ".join(str(message).split())
    log.log(
        level, "refused %s %s from %s (%d): %s", request.method, request.url.path, who, status, line
    )
    return error(status, message, **extra)
