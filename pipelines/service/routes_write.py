"""Routes that do work: dataset uploads, arrivals, cancelling a job, predictions."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pipelines.service.core import Conflict, NotFound, Refused, Service, dataset_id, need
from pipelines.service.routes_read import JOB_ID, public_job
from pipelines.service.uploads import read_form, store, validate
from registry.streams import check_stream
from tasks.errors import ConfigError

WRITE = Depends(need("write"))
READ = Depends(need("read"))


class ArrivalRequest(BaseModel):
    """A task arriving in a stream: its data (an uploaded dataset or a catalog set), the
    backbone, its training options and the baselines learnt beside it."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="the task's name (default: the catalog set's)")
    dataset: str | None = Field(None, description="an id from POST /v1/datasets")
    catalog: str | None = Field(None, description="a built-in dataset (`continual data list`)")
    backbone: str | None = Field(None, description="default: the stream's, else the server's")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="steps, batch_size, lr, prefix_length, init, module, max_length, ... (as in a "
        "stream file)",
    )
    baselines: list[str | dict[str, Any]] = Field(
        default_factory=list, description="e.g. ['sequential-ft', {'name': 'shared-prefix'}]"
    )


class PredictRequest(BaseModel):
    """Texts to answer, with a task's prefix, or routed to the task each most likely is."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str] = Field(..., min_length=1, description="the texts")
    task: str | None = Field(None, description="a task's name; none: route each input")


def add(app: FastAPI, service: Service) -> None:
    reg = service.reg

    async def known(task: str) -> bool:
        if service.seen(task):  # the common case: no thread hop, no query
            return True
        return await run_in_threadpool(service.has_task, task)

    @app.post(
        "/v1/datasets",
        tags=["datasets"],
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["train"],
                            "properties": {
                                "train": {"type": "string", "format": "binary"},
                                "eval": {"type": "string", "format": "binary"},
                                "text_field": {"type": "string"},
                                "label_field": {"type": "string"},
                                "target_field": {"type": "string"},
                                "kind": {
                                    "type": "string",
                                    "enum": ["classification", "generation"],
                                },
                                "name": {"type": "string"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def upload(request: Request, _: Any = WRITE) -> JSONResponse:
        """Upload a task's data: a `train` file and optionally an `eval` file (JSONL, CSV/TSV or
        Parquet), validated like `continual train --train FILE` and stored by content."""
        form = await read_form(request, service.settings.max_upload_bytes)
        try:
            data = await run_in_threadpool(validate, form, reg.workspace)
            body = await run_in_threadpool(store, reg, data)
        finally:
            for v in form.values():
                if hasattr(v, "close"):
                    await v.close()
        return JSONResponse(body, status_code=201)

    @app.post("/v1/streams/{stream}/arrivals", tags=["streams"], status_code=202)
    def arrive(stream: str, body: ArrivalRequest, _: Any = WRITE) -> JSONResponse:
        """Queue a task's arrival at the end of the stream; a worker learns it (202 + the job)."""
        job = queue_arrival(service, check_stream(stream), body)
        return JSONResponse({"job": public_job(job)}, status_code=202)

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"])
    def cancel(job_id: int = JOB_ID, _: Any = WRITE) -> dict[str, Any]:
        """Cancel a queued job (a running one finishes; a failed one is retried or cancelled)."""
        job = reg.queue.get(job_id)
        if job.state not in ("queued", "failed"):
            raise Conflict(f"job {job_id} is {job.state}: only a queued job can be cancelled")
        try:
            return {"job": public_job(reg.queue.cancel(job_id))}
        except ConfigError as e:
            raise Conflict(str(e)) from None

    @app.post("/v1/predict", tags=["predict"])
    async def predict_(body: PredictRequest, _: Any = READ) -> dict[str, Any]:
        """Answer the inputs with `task`'s prefix, or route each to a task first; requests that
        arrive together share one backbone pass (tasks mixed)."""
        limit = service.settings.max_inputs
        if len(body.inputs) > limit:
            raise Refused(
                413, f"inputs: {len(body.inputs)} texts; at most {limit} a request (--max-inputs)"
            )
        if body.task is not None and not await known(body.task):
            raise NotFound(f"task {body.task} is not in the registry; GET /v1/tasks lists them")
        answerer = service.answerer
        if not answerer.prepared(body.task):  # its own errors, not a whole micro-batch's
            await service.batcher.run(lambda: answerer.prepare(body.task))
        answers = await service.batcher.submit([(body.task, t) for t in body.inputs])
        return {
            "task": body.task,
            "predictions": [a.to_dict() for a in answers],
        }


def queue_arrival(service: Service, stream: str, body: ArrivalRequest) -> Any:
    """Check the request, then queue it the way `continual learn --queue` does."""
    from pipelines.arrival.plan import BaselinePlan
    from pipelines.arrival.queueing import enqueue_arrival, stream_backbone
    from pipelines.stream import (
        MODULE_KEYS,
        PREFIX_KEYS,
        REEVAL_KEYS,
        STATE_KEYS,
        TRAIN_KEYS,
        TUNE_KEYS,
        arrival_plan,
        check_options,
    )

    reg = service.reg
    if (body.dataset is None) == (body.catalog is None):
        raise ConfigError(
            "give the data as 'dataset' (an uploaded id) or 'catalog' (a name), one of them"
        )
    allowed = PREFIX_KEYS + REEVAL_KEYS + TRAIN_KEYS + TUNE_KEYS + STATE_KEYS + MODULE_KEYS
    allowed += ("max_train", "max_eval")
    opts = check_options(body.options, "options", allow_name=False, allowed=allowed)
    data = None
    if body.dataset is not None:
        if body.name is None:
            raise ConfigError("name: an arrival from an uploaded dataset needs a task name")
        for key in ("max_train", "max_eval"):
            if key in opts:
                raise ConfigError(f"options.{key} applies to catalog sets only")
        data = reg.data.get(dataset_id(body.dataset))
        plan = arrival_plan(
            {**opts, "name": body.name, "dataset": "uploaded", "kind": data.spec.kind},
            where="arrival",
        )
        plan = _uploaded(plan, body.dataset)
    else:
        plan = arrival_plan(
            {**opts, "name": body.name or body.catalog, "dataset": body.catalog}, where="arrival"
        )
    baselines = tuple(BaselinePlan.from_dict(b) for b in body.baselines)
    backbone = body.backbone or stream_backbone(reg, stream) or service.answerer.name
    if backbone is None and service.answerer.backbone is not None:
        backbone = service.answerer.backbone.name
    if backbone is None:
        raise ConfigError("backbone: name the backbone (e.g. minilm); the stream has none yet")
    if body.catalog is not None:
        from tasks import catalog

        catalog.get(body.catalog)  # an unknown name is refused here, in one line
    return enqueue_arrival(
        reg, plan=plan, backbone=backbone, stream=stream, baselines=baselines, data=data
    )


def _uploaded(plan: Any, dataset_id: str) -> Any:
    """The plan of an uploaded dataset: its data is the stored one, not a catalog name."""
    from dataclasses import replace

    from tasks.load import DataArgs

    data = DataArgs(kind=plan.data.kind, description=f"uploaded dataset {dataset_id}")
    return replace(plan, data=data)
