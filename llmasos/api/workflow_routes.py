"""`/os/workflows`: define, validate and run workflows; list, show, cancel, approve and resume runs;
follow a run's events as server-sent events; draw its graph. Each route is a thin layer over
`WorkflowCalls`, as the app that the request's key names."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.workflows.calls import WorkflowCalls

router = APIRouter(tags=["workflows"])
#: A followed run's events are sent when the store commits them (its change signal wakes the stream);
#: this is only how long a stream waits with no commit at all before it reads again anyway.
EVENT_WAIT_SECONDS = 15.0
#: Statuses after which a run's event stream ends (a waiting run goes on only when approved).
ENDED = ("succeeded", "failed", "cancelled", "waiting")
MEDIA_TYPES = {"svg": "image/svg+xml", "png": "image/png", "dot": "text/vnd.graphviz"}


class SpecBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict | str = Field(description="the workflow: a mapping, or its YAML/JSON text")


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict | str | None = Field(None, description="a workflow given whole")
    workflow: str | None = Field(None, description="or the name of a workflow this app defined")
    inputs: dict[str, Any] = Field(default_factory=dict)
    wait: bool = Field(False, description="answer when the run has ended (or waits for an approval)")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="with wait: answer after this at most")


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str
    data: Any = None


def _calls(request: Request) -> WorkflowCalls:
    return request.app.state.workflows


@router.post("/os/workflows/validate")
def validate(body: SpecBody, request: Request, app: Caller) -> dict:
    """Check a spec as a submission would, without running or storing it."""
    return _calls(request).validate(app, body.spec)


@router.post("/os/workflows", status_code=201)
def define(body: SpecBody, request: Request, app: Caller) -> dict:
    """Store a workflow under its name, for runs (and other workflows' steps) to name."""
    return _calls(request).define(app, body.spec)


@router.get("/os/workflows")
def definitions(request: Request, app: Caller) -> dict:
    return {"workflows": _calls(request).definitions(app)}


@router.post("/os/workflows/runs", status_code=201)
def start(body: RunBody, request: Request, app: Caller) -> dict:
    calls = _calls(request)
    run = calls.start(app, spec=body.spec, workflow=body.workflow, inputs=body.inputs)
    return calls.wait(app, run["id"], body.timeout_s) if body.wait else run


@router.get("/os/workflows/runs")
def runs(request: Request, app: Caller, status: str | None = None, limit: int = 100) -> dict:
    return {"runs": _calls(request).runs(app, status=status, limit=max(1, min(limit, 1000)))}


@router.get("/os/workflows/runs/{run_id}")
def show(run_id: str, request: Request, app: Caller) -> dict:
    return _calls(request).show(app, run_id)


@router.delete("/os/workflows/runs/{run_id}")
def cancel(run_id: str, request: Request, app: Caller) -> dict:
    return _calls(request).cancel(app, run_id)


@router.post("/os/workflows/runs/{run_id}/approve")
def approve(run_id: str, body: ApproveBody, request: Request, app: Caller) -> dict:
    return _calls(request).approve(app, run_id, body.step, body.data)


@router.post("/os/workflows/runs/{run_id}/resume")
def resume(run_id: str, request: Request, app: Caller) -> dict:
    return _calls(request).resume(app, run_id)


@router.get("/os/workflows/runs/{run_id}/events")
async def events(run_id: str, request: Request, app: Caller) -> StreamingResponse:
    """The run's events as server-sent events, from its creation until it ends or waits."""
    calls = _calls(request)
    await run_in_threadpool(calls.events, app, run_id)  # a 404 before the stream starts

    async def body():
        after, changes = 0, calls.store.changes
        while not await request.is_disconnected():
            seen = changes.version  # read before the store: a commit after it wakes the wait below
            # the status before the events: the event of the commit that ended the run is then read
            status = (await run_in_threadpool(calls.store.run, run_id))["status"]
            batch = await run_in_threadpool(calls.events, app, run_id, after)
            for event in batch:
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                after = event["id"]
            if batch:
                continue
            if status in ENDED:
                yield "data: [DONE]\n\n"
                return
            await changes.wait_async(seen, EVENT_WAIT_SECONDS)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/os/workflows/runs/{run_id}/graph")
def run_graph(run_id: str, request: Request, app: Caller, format: str = "svg") -> Response:
    """The run's graph, each step coloured by its state (svg, png or dot)."""
    picture = _calls(request).graph(app, run_id=run_id, fmt=format)
    return Response(picture, media_type=MEDIA_TYPES.get(format, "application/octet-stream"))


@router.get("/os/workflows/{name}/graph")
def workflow_graph(name: str, request: Request, app: Caller, format: str = "svg") -> Response:
    picture = _calls(request).graph(app, workflow=name, fmt=format)
    return Response(picture, media_type=MEDIA_TYPES.get(format, "application/octet-stream"))
