"""Read routes: health, metrics, tasks, streams, reports, jobs and stored datasets."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Depends, FastAPI, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pipelines.arrival.queueing import has_stream
from pipelines.service.core import NotFound, Service, need
from pipelines.service.core import dataset_id as checked_id
from pipelines.service.metrics import CONTENT_TYPE
from pipelines.service.uploads import describe
from pipelines.tables import last_line
from registry.streams import check_stream
from tasks.spec import check_name

READ = Depends(need("read"))
PAGE = Query(100, ge=1, le=1000, description="how many to list")
OFFSET = Query(0, ge=0, le=10**9, description="how many to skip")
JOB_ID = Path(..., ge=1, le=2**31 - 1, description="a job's id")
JOB_STATES = Literal["queued", "running", "done", "failed", "cancelled"]


def add(app: FastAPI, service: Service) -> None:
    reg = service.reg

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """The process answers (it may still be loading the backbone: see /readyz)."""
        return {"ok": True}

    @app.get("/readyz", tags=["service"], responses={503: {"description": "not ready yet"}})
    def readyz() -> Response:
        """Ready to serve: the registry is open and the backbone loaded (if any task exists)."""
        bb = service.answerer.backbone
        body = {
            "ready": service.ready.is_set(),
            "backbone": bb.name if bb is not None else None,
            "error": service.load_error,
        }
        return JSONResponse(body, status_code=200 if service.ready.is_set() else 503)

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text: requests, latencies, micro-batch sizes, queue depth, jobs by state."""
        return Response(service.metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/v1/tasks", tags=["registry"])
    def tasks(limit: int = PAGE, offset: int = OFFSET, _: Any = READ) -> dict[str, Any]:
        """The registry's tasks, oldest first, a page at a time."""
        rows = reg.tasks(limit=limit, offset=offset)
        return {
            "tasks": [t.to_dict() for t in rows],
            "limit": limit,
            "offset": offset,
            "total": reg.count_tasks(),
        }

    @app.get("/v1/tasks/{name}", tags=["registry"])
    def task(name: str, _: Any = READ) -> dict[str, Any]:
        """A task, its current prefix, that prefix's latest scores and lineage."""
        return reg.show(_task(name)).to_dict()

    @app.get("/v1/tasks/{name}/history", tags=["registry"])
    def history(name: str, _: Any = READ) -> dict[str, Any]:
        """Every evaluation of the task, over its versions and the stream's arrivals."""
        return {"task": name, "evaluations": [e.to_dict() for e in reg.history(_task(name))]}

    @app.get("/v1/tasks/{name}/lineage", tags=["registry"])
    def lineage(
        name: str, version: int | None = Query(None, ge=1, le=10**9), _: Any = READ
    ) -> dict[str, Any]:
        """The earlier prefixes the task's prefix started from, transitively."""
        edges = reg.lineage(_task(name), version=version)
        return {"task": name, "lineage": [e.to_dict() for e in edges]}

    @app.get("/v1/tasks/{name}/similar", tags=["registry"])
    async def similar(
        name: str,
        top: int = Query(5, ge=1, le=1000),
        method: Literal["embedding", "prefix"] = "embedding",
        _: Any = READ,
    ) -> dict[str, Any]:
        """The earlier tasks nearest to this one (task embeddings, or SPoT prefix similarity)."""
        from pipelines.jobs import stored_backbone
        from pipelines.similar import task_neighbours

        task = _task(name)

        def find() -> list[Any]:
            bb = service.answerer.load() or stored_backbone(reg, task, None)
            return task_neighbours(reg, bb, task, method=method, top=top)

        found = await service.batcher.run(find)
        return {
            "task": task,
            "method": method,
            "similar": [{"task": n.task, "score": n.score, "method": n.method} for n in found],
        }

    @app.get("/v1/streams", tags=["streams"])
    def streams(_: Any = READ) -> dict[str, Any]:
        """Every stream: its length (done arrivals) and its jobs by state."""
        return {"streams": [s.to_dict() for s in reg.streams.list()]}

    @app.get(
        "/v1/streams/{stream}/report",
        tags=["streams"],
        responses={200: {"content": {"text/html": {}, "application/json": {}}}},
    )
    def report(stream: str, format: Literal["html", "json"] = "html", _: Any = READ) -> Response:
        """The stream's continual-learning report, as built now (report.html or report.json)."""
        from pipelines.report import build
        from pipelines.report_html import html

        doc = build(reg, _stream(stream))
        if format == "json":
            return JSONResponse(doc)
        return HTMLResponse(html(doc))

    @app.get("/v1/jobs", tags=["jobs"])
    def jobs(
        stream: str | None = None,
        state: JOB_STATES | None = None,
        limit: int = PAGE,
        offset: int = OFFSET,
        _: Any = READ,
    ) -> dict[str, Any]:
        """Arrival jobs, newest last, with their state and live progress."""
        if stream is not None:
            _stream(stream)
        rows = reg.queue.list(stream=stream, state=state, limit=limit, offset=offset)
        total = reg.queue.count(stream=stream, states=(state,) if state else ())
        return {"jobs": [public_job(j) for j in rows], "total": total, "offset": offset}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job(job_id: int = JOB_ID, _: Any = READ) -> dict[str, Any]:
        """One job: state, progress (phase, step, loss, process), result, error."""
        return {"job": public_job(reg.queue.get(job_id))}

    @app.get("/v1/datasets/{dataset_id}", tags=["datasets"])
    def dataset(dataset_id: str, _: Any = READ) -> dict[str, Any]:
        """A stored dataset: its size and task spec (the examples stay in the registry)."""
        record = reg.data.record(checked_id(dataset_id))
        return describe(record, reg.data.get(record.sha256))

    def _task(name: str) -> str:
        check_name(name)
        if not reg.has_task(name):
            raise NotFound(f"task {name} is not in the registry; GET /v1/tasks lists them")
        return name

    def _stream(name: str) -> str:
        if not has_stream(reg, check_stream(name)):
            raise NotFound(f"stream {name} is not in the registry; GET /v1/streams lists them")
        return name


def public_job(job: Any) -> dict[str, Any]:
    """A job as the API shows it: its payload's data paths are the submitter's business."""
    d = job.to_dict()
    plan = (d.get("payload") or {}).get("plan") or {}
    data = plan.get("data") or {}
    for key in ("train", "eval"):
        if data.get(key):
            data[key] = "(a file of the submitter's)"
    if d.get("error"):
        d["error"] = last_line(d["error"])
    return d
