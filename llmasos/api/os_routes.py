"""The OS endpoints: processes, apps, tasks, services, models, health."""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Admin, Caller
from llmasos.api.program_calls import program_pool
from llmasos.api.schemas import (
    AppCreateRequest,
    AppUpdateRequest,
    AskRequest,
    ServiceCallRequest,
    VoiceRequest,
)
from llmasos.errors import InvalidRequestError
from llmasos.programs import Cancellation, ProgramResult, default_registry
from llmasos.security.apps import DEFAULT_CAPABILITIES, App

router = APIRouter(tags=["os"])


def _app_json(request: Request, app: App) -> dict:
    return {**asdict(app), "keys": request.app.state.syscalls.apps.key_hints(app.name)}


@router.get("/os/ps")
def ps(request: Request, app: Caller, all: bool = True) -> dict:
    """Processes this app may see (every app's for an admin); `all=false` hides ended ones."""
    return {"processes": request.app.state.syscalls.ps(app, include_finished=all)}


@router.get("/os/tasks/{pid}")
def task(pid: int, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.status(app, pid)


@router.delete("/os/tasks/{pid}")
def cancel_task(pid: int, request: Request, app: Caller) -> dict:
    syscalls = request.app.state.syscalls
    process = syscalls.cancel(app, pid)
    return syscalls.describe(process)


@router.get("/os/apps")
def list_apps(request: Request, app: Caller) -> dict:
    return {"apps": [_app_json(request, a) for a in request.app.state.syscalls.list_apps(app)]}


@router.post("/os/apps", status_code=201)
def create_app(body: AppCreateRequest, request: Request, app: Admin) -> dict:
    """Register an app; the response holds its API key, shown this once."""
    fields = body.model_dump()
    fields["capabilities"] = tuple(fields["capabilities"] or DEFAULT_CAPABILITIES)
    created, key = request.app.state.syscalls.create_app(app, App(**fields))
    return {**_app_json(request, created), "api_key": key}


@router.get("/os/apps/{name}")
def show_app(name: str, request: Request, app: Caller) -> dict:
    return _app_json(request, request.app.state.syscalls.get_app(app, name))


@router.delete("/os/apps/{name}")
def remove_app(name: str, request: Request, app: Admin) -> dict:
    if name == app.name:
        raise InvalidRequestError("an app cannot remove itself; use another admin key")
    request.app.state.syscalls.remove_app(app, name)
    return {"removed": name}


@router.patch("/os/apps/{name}")
def update_app(name: str, body: AppUpdateRequest, request: Request, app: Admin) -> dict:
    """Change an app's priority class, weight or quotas; its next requests run under them."""
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise InvalidRequestError(
            "nothing to change: give priority, weight, tokens_per_minute, max_concurrent, max_queued, "
            "requests_per_minute or request_burst"
        )
    return _app_json(request, request.app.state.syscalls.update_app(app, name, **changes))


@router.post("/os/apps/{name}/keys", status_code=201)
def issue_key(name: str, request: Request, app: Admin) -> dict:
    """Another API key for app `name` (its other keys stay valid); shown this once."""
    key, _ = request.app.state.syscalls.issue_key(app, name)
    return {"app": name, "api_key": key, "keys": request.app.state.syscalls.apps.key_hints(name)}


@router.delete("/os/apps/{name}/keys")
def revoke_keys(name: str, request: Request, app: Admin) -> dict:
    """Revoke every key of app `name`: its live processes are cancelled at once."""
    if name == app.name:
        raise InvalidRequestError("an app cannot revoke its own keys; use another admin key")
    return {"app": name, "revoked": request.app.state.syscalls.revoke_keys(app, name)}


@router.get("/os/audit")
def audit(
    request: Request,
    app: Caller,
    app_name: Annotated[str | None, Query(alias="app")] = None,
    outcome: str | None = None,
    allowed: bool | None = None,
    since: float | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    """Audit rows, newest first, filtered (an app that is not an admin reads its own rows only)."""
    rows = request.app.state.syscalls.query_audit(
        app, app=app_name, outcome=outcome, allowed=allowed, since=since, limit=limit
    )
    return {"rows": rows}


@router.get("/os/nodes")
def nodes(request: Request, app: Admin) -> dict:
    """The cluster's nodes (admin key): capabilities, models and their health, liveness, processes.
    Empty on a server started without --cluster."""
    return {"nodes": request.app.state.syscalls.nodes(app)}


@router.get("/os/models")
def models(request: Request, app: Caller) -> dict:
    """Library models this app may use, with whether each is loaded and its measured memory."""
    syscalls = request.app.state.syscalls
    residents = {r.name: r for r in syscalls.resident_models()}
    out = []
    for manifest in request.app.state.store.list():
        if not app.allows("model", manifest.name):
            continue
        resident = residents.get(manifest.name)
        out.append(
            {
                **manifest.to_dict(),
                "resident": resident is not None,
                "memory_bytes": resident.memory_bytes if resident else None,
                "active_processes": resident.active_processes if resident else 0,
            }
        )
    memory = syscalls.memory_budget()
    return {"models": out, "memory_budget_bytes": memory.budget_bytes, "memory_used_bytes": memory.used_bytes}


@router.get("/os/services")
def list_services(request: Request, app: Caller) -> dict:
    """The services and tools this app may use (every program is called through /os/services/{name}),
    each with its schemas, capability and side effects."""
    registry = default_registry()
    return {
        "services": [
            {**p.describe(), "examples": list(registry.examples_of(p))}
            for p in registry.list()
            if app.allows(p.kind, p.name)
        ]
    }


@router.get("/os/tools")
def list_tools(request: Request, app: Caller) -> dict:
    """The tools this app may use, as OpenAI `tools=[...]` entries for function calling."""
    return {"tools": default_registry().openai_tools(app)}


@router.get("/os/plugins")
def list_plugins(request: Request, app: Caller) -> dict:
    """The plugins loaded into this server: where each comes from, what it added, why one failed."""
    return {"plugins": [p.to_dict() for p in default_registry().plugins]}


@router.post("/os/services/{name}")
async def call_service(name: str, body: ServiceCallRequest, request: Request, app: Caller) -> dict:
    """Run a service or tool: `{"input": ..., "params": {...}}` -> `{"output": ..., "usage": {...}}`.

    On a thread of the program-call pool (429 when it is full), cancelled if the client goes away."""
    syscalls = request.app.state.syscalls
    registry = default_registry()
    registry.get(name)  # an unknown name is a 404 before any thread is taken

    def run(cancellation: Cancellation) -> ProgramResult:
        return registry.run(
            syscalls,
            app,
            name,
            body.input,
            body.params,
            model=body.model,
            file_roots=(),  # remote callers send files inline; no path on the server is theirs
            cancellation=cancellation,
        )

    result = await program_pool(request).run(request, run)
    return {"output": result.output, "usage": result.usage, "details": result.details}


def _remote_context(app: App):
    from llmasos.tools.registry import ToolContext

    # Remote callers send files inline; no tool may read or write a path on the server for them.
    return ToolContext(app, file_roots=())


@router.post("/os/ask")
async def ask(body: AskRequest, request: Request, app: Caller) -> dict:
    """Route a plain-language request (with an optional image or WAV, base64) and run the route:
    `{"route": {...scores, reasons}, "answer": ..., "steps": [...]}`."""
    from llmasos.router.ask import ask as run_ask
    from llmasos.tools.media import decode_base64

    syscalls = request.app.state.syscalls
    data = decode_base64(body.file_base64, "file_base64") if body.file_base64 else None
    answer = await run_in_threadpool(
        run_ask,
        syscalls,
        app,
        body.request,
        attachment=data,
        model=body.model,
        context=_remote_context(app),
        use_model_for_close_calls=body.use_model_for_close_calls,
    )
    return answer.to_dict()


@router.post("/os/voice")
async def voice(body: VoiceRequest, request: Request, app: Caller) -> dict:
    """The voice loop: a spoken question (WAV, base64) in, the spoken answer (WAV, base64) out."""
    from llmasos.router.ask import voice as run_voice
    from llmasos.tools.media import decode_base64

    wav = decode_base64(body.audio_base64, "audio_base64")
    reply = await run_in_threadpool(
        run_voice, request.app.state.syscalls, app, wav, model=body.model, context=_remote_context(app)
    )
    return {
        "transcript": reply.transcript,
        **reply.answer.to_dict(),
        "audio_base64": base64.b64encode(reply.audio).decode("ascii"),
    }


@router.get("/healthz", response_model=None)
def healthz(request: Request) -> dict | JSONResponse:
    """Liveness without a key: the kernel thread runs and which models are loaded; 503 `loading`
    while the models the server preloads are still loading (it answers other calls meanwhile)."""
    syscalls = request.app.state.syscalls
    health = {
        "status": "ok" if syscalls.is_running else "stopped",
        "resident_models": [r.name for r in syscalls.resident_models()],
    }
    preloading = getattr(request.app.state, "preloading", None)
    if preloading is not None and preloading.failed:
        health["preload_failed"] = preloading.failed
    if preloading is not None and not preloading.is_done and syscalls.is_running:
        return JSONResponse({**health, "status": "loading", "loading_models": preloading.loading}, 503)
    return health
