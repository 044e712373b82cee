"""OpenAI's `/v1/vector_stores`: stores, their files, file batches and search, with OpenAI's object
shapes, so the official `openai` package works unchanged (`files.upload_and_poll`, `search`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from llmasos.api.auth import Caller
from llmasos.api.files_routes import page_request
from llmasos.data.search import Hit, SearchOptions
from llmasos.errors import InvalidRequestError

router = APIRouter(tags=["vector_stores"])

#: How long the `openai` package's poll helpers wait between polls (it reads this header); our
#: small files index in well under a second.
POLL_AFTER_MS = "200"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StoreCreate(_Body):
    name: str | None = None
    metadata: dict[str, str] | None = None
    file_ids: list[str] | None = None
    chunking_strategy: dict | None = None
    expires_after: dict | None = None


class StoreUpdate(_Body):
    name: str | None = None
    metadata: dict[str, str] | None = None


class StoreFileCreate(_Body):
    file_id: str
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict | None = None


class BatchCreate(_Body):
    file_ids: list[str] = Field(min_length=1, max_length=500)
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict | None = None


class RankingOptions(_Body):
    ranker: str | None = None
    score_threshold: float = Field(0.0, ge=0.0, le=1.0)


class SearchBody(_Body):
    query: str | list[str]
    filters: dict | None = None
    max_num_results: int = Field(10, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False


def _query_text(query: str | list[str]) -> str:
    text = query if isinstance(query, str) else " ".join(q for q in query if isinstance(q, str))
    if not text.strip():
        raise InvalidRequestError("query must hold some text")
    return text


def search_result(hit: Hit) -> dict:
    return {
        "file_id": hit.file_id,
        "filename": hit.filename,
        "score": round(hit.score, 6),
        "attributes": hit.attributes,
        "content": [{"type": "text", "text": hit.text}],
    }


@router.post("/v1/vector_stores")
def create_store(body: StoreCreate, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.create_store(
        app, body.name, body.metadata, body.file_ids, body.chunking_strategy
    )


@router.get("/v1/vector_stores")
def list_stores(
    request: Request,
    app: Caller,
    limit: int = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    return request.app.state.syscalls.list_stores(app, page_request(limit, after, order))


@router.get("/v1/vector_stores/{store_id}")
def get_store(store_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.get_store(app, store_id)


@router.post("/v1/vector_stores/{store_id}")
def update_store(store_id: str, body: StoreUpdate, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.update_store(app, store_id, body.name, body.metadata)


@router.delete("/v1/vector_stores/{store_id}")
def delete_store(store_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.delete_store(app, store_id)


@router.post("/v1/vector_stores/{store_id}/files")
def attach_file(store_id: str, body: StoreFileCreate, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.attach_file(
        app, store_id, body.file_id, body.attributes, body.chunking_strategy
    )


@router.get("/v1/vector_stores/{store_id}/files")
def list_store_files(
    store_id: str,
    request: Request,
    app: Caller,
    limit: int = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict:
    return request.app.state.syscalls.list_store_files(
        app, store_id, page_request(limit, after, order), filter
    )


@router.get("/v1/vector_stores/{store_id}/files/{file_id}")
def get_store_file(store_id: str, file_id: str, request: Request, response: Response, app: Caller) -> dict:
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return request.app.state.syscalls.get_store_file(app, store_id, file_id)


class StoreFileUpdate(_Body):
    attributes: dict[str, str | float | bool] | None


@router.post("/v1/vector_stores/{store_id}/files/{file_id}")
def update_store_file(
    store_id: str, file_id: str, body: StoreFileUpdate, request: Request, app: Caller
) -> dict:
    return request.app.state.syscalls.update_store_file(app, store_id, file_id, body.attributes)


@router.get("/v1/vector_stores/{store_id}/files/{file_id}/content")
def store_file_content(store_id: str, file_id: str, request: Request, app: Caller) -> dict:
    """The file's indexed text, one entry a chunk."""
    data = request.app.state.syscalls.store_file_content(app, store_id, file_id)
    return {"object": "vector_store.file_content.page", "data": data, "has_more": False, "next_page": None}


@router.delete("/v1/vector_stores/{store_id}/files/{file_id}")
def detach_file(store_id: str, file_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.detach_file(app, store_id, file_id)


@router.post("/v1/vector_stores/{store_id}/file_batches")
def create_batch(store_id: str, body: BatchCreate, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.create_batch(
        app, store_id, body.file_ids, body.attributes, body.chunking_strategy
    )


@router.get("/v1/vector_stores/{store_id}/file_batches/{batch_id}")
def get_batch(store_id: str, batch_id: str, request: Request, response: Response, app: Caller) -> dict:
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return request.app.state.syscalls.get_batch(app, store_id, batch_id)


@router.post("/v1/vector_stores/{store_id}/file_batches/{batch_id}/cancel")
def cancel_batch(store_id: str, batch_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.cancel_batch(app, store_id, batch_id)


@router.get("/v1/vector_stores/{store_id}/file_batches/{batch_id}/files")
def list_batch_files(
    store_id: str,
    batch_id: str,
    request: Request,
    app: Caller,
    limit: int = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict:
    page = page_request(limit, after, order)
    return request.app.state.syscalls.list_store_files(app, store_id, page, filter, batch_id)


@router.post("/v1/vector_stores/{store_id}/search")
def search_store(store_id: str, body: SearchBody, request: Request, app: Caller) -> dict[str, Any]:
    threshold = body.ranking_options.score_threshold if body.ranking_options else 0.0
    options = SearchOptions(max_results=body.max_num_results, score_threshold=threshold, filters=body.filters)
    query = _query_text(body.query)
    hits = request.app.state.syscalls.search_store(app, store_id, query, options)
    return {
        "object": "vector_store.search_results.page",
        "search_query": [query],
        "data": [search_result(h) for h in hits],
        "has_more": False,
        "next_page": None,
    }
