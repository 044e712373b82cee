"""Loading and unloading models over HTTP: `POST /os/models/{name}/load` and `/unload` (admin key),
`GET /os/models/loaded`, and the `keep_alive` a request may carry (Ollama's field; an extra body field
on the OpenAI routes). Each is a thin layer over the residency system calls, which check and audit."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.api.ollama_schemas import keep_alive_seconds
from llmasos.kernel.snapshots import ResidentModelInfo
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App

router = APIRouter(tags=["os"])

#: A model's name or alias in a path, as long as the request bodies allow.
ModelName = Annotated[str, Path(min_length=1, max_length=200)]


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    # Seconds, or a duration like "10m"; -1: until unloaded; absent: the model's configured keep-alive.
    keep_alive: float | str | None = None


def apply_keep_alive(syscalls: Syscalls, app: App, model: str, seconds: float | None) -> None:
    """After a request on `model` was admitted: its `keep_alive`, when it carried one, from now on."""
    if seconds is not None:
        syscalls.set_keep_alive(app, model, seconds)


def loaded_json(info: ResidentModelInfo) -> dict:
    """One loaded model as the API shows it: memory, keep-alive and seconds to expiry (null: never)."""
    fields = asdict(info)
    if info.expires_in_seconds is not None:
        fields["expires_in_seconds"] = round(info.expires_in_seconds, 3)
    return fields


@router.get("/os/models/loaded")
def loaded(request: Request, app: Caller) -> dict:
    """The loaded models this app may use, with their memory, keep-alive and expiry."""
    syscalls: Syscalls = request.app.state.syscalls
    memory = syscalls.memory_budget()
    return {
        "models": [loaded_json(r) for r in syscalls.loaded_models(app)],
        "memory_budget_bytes": memory.budget_bytes,
        "memory_used_bytes": memory.used_bytes,
    }


@router.post("/os/models/{name}/load")
async def load(name: ModelName, request: Request, app: Caller, body: LoadRequest | None = None) -> dict:
    """Load a model now, to stay `keep_alive` after its last use; what is loaded. Admin only: the
    system call checks it, so a refusal is audited as `models.load`."""
    syscalls: Syscalls = request.app.state.syscalls
    seconds = keep_alive_seconds(body.keep_alive if body else None)
    info = await run_in_threadpool(syscalls.load_model, app, name, keep_alive=seconds)
    if info is None:  # a keep-alive of 0: loaded and, being idle, unloaded again
        return {"model": syscalls.resolve_model(name), "loaded": False}
    return {**loaded_json(info), "loaded": True}


@router.post("/os/models/{name}/unload")
def unload(name: ModelName, request: Request, app: Caller) -> dict:
    """Unload a model (admin): at once if it is idle, else when its processes end (`pending`)."""
    return request.app.state.syscalls.unload_model(app, name)
