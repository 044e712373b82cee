"""`/os/...` over each app's data, where LLMasOS offers more than OpenAI's API: hybrid search with
weights, a mode, filters and an explanation of each rank; data usage and quotas per app."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Admin, Caller
from llmasos.data.search import FUSIONS, MODES, SearchOptions
from llmasos.services.export import export_zip

router = APIRouter(tags=["os"])


class OsSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4096)
    max_results: int = Field(10, ge=1, le=50)
    mode: str = Field("hybrid", description=f"one of {', '.join(MODES)}")
    bm25_weight: float = Field(1.0, ge=0)
    vector_weight: float = Field(1.0, ge=0)
    score_threshold: float = Field(0.0, ge=0)
    filters: dict | None = None
    explain: bool = False
    fusion: str = Field("convex", description=f"hybrid mode's fusion: one of {', '.join(FUSIONS)}")


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bytes: int | None = Field(None, ge=0, description="null: the default")
    max_items: int | None = Field(None, ge=0, description="null: the default")


@router.post("/os/vector_stores/{store_id}/search")
def search(store_id: str, body: OsSearch, request: Request, app: Caller) -> dict:
    options = SearchOptions(**body.model_dump(exclude={"query"}))
    hits = request.app.state.syscalls.search_store(app, store_id, body.query, options)
    return {"object": "list", "data": [h.cited(body.explain) for h in hits]}


@router.get("/os/apps/{name}/data")
def data_usage(name: str, request: Request, app: Caller) -> dict:
    """An app's data usage and quota (its own, or any app's with the admin key)."""
    return request.app.state.syscalls.data_usage(app, name)


@router.put("/os/apps/{name}/data/quota")
def set_quota(name: str, body: QuotaBody, request: Request, app: Admin) -> dict:
    return request.app.state.syscalls.set_data_quota(app, name, body.max_bytes, body.max_items)


@router.get("/os/apps/{name}/export")
async def export(name: str, request: Request, app: Caller) -> Response:
    """An app's data as a zip of JSON lines and original files (its own, or any app's with the
    admin key): files, vector stores, chunks, conversations, responses, key-value data, triples."""
    archive = await run_in_threadpool(export_zip, request.app.state.syscalls, app, name)
    headers = {"Content-Disposition": f'attachment; filename="{name}-export.zip"'}
    return Response(archive, media_type="application/zip", headers=headers)
