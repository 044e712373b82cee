"""OpenAI's `/v1/conversations` (create, retrieve, update, delete) and their items (create, list,
retrieve, delete); `core_memory` (a list of facts kept in every context) is LLMasOS's addition."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from llmasos.api.auth import Caller
from llmasos.api.files_routes import page_request

router = APIRouter(tags=["conversations"])


class ConversationBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, Any] | None = None
    items: list[dict[str, Any]] | None = None
    core_memory: list[str] | None = None


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, Any] | None = None
    core_memory: list[str] | None = None


class ItemsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[dict[str, Any]]


@router.post("/v1/conversations")
def create_conversation(request: Request, app: Caller, body: ConversationBody | None = None) -> dict:
    body = body or ConversationBody()
    return request.app.state.syscalls.create_conversation(app, body.metadata, body.items, body.core_memory)


@router.get("/v1/conversations/{conversation_id}")
def get_conversation(conversation_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.get_conversation(app, conversation_id)


@router.post("/v1/conversations/{conversation_id}")
def update_conversation(
    conversation_id: str, body: ConversationUpdate, request: Request, app: Caller
) -> dict:
    return request.app.state.syscalls.update_conversation(
        app, conversation_id, body.metadata, body.core_memory
    )


@router.delete("/v1/conversations/{conversation_id}")
def delete_conversation(conversation_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.delete_conversation(app, conversation_id)


@router.post("/v1/conversations/{conversation_id}/items")
def add_items(conversation_id: str, body: ItemsBody, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.add_conversation_items(app, conversation_id, body.items)


@router.get("/v1/conversations/{conversation_id}/items")
def list_items(
    conversation_id: str,
    request: Request,
    app: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    page = page_request(limit, after, order)
    return request.app.state.syscalls.list_conversation_items(app, conversation_id, page)


@router.get("/v1/conversations/{conversation_id}/items/{item_id}")
def get_item(conversation_id: str, item_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.get_conversation_item(app, conversation_id, item_id)


@router.delete("/v1/conversations/{conversation_id}/items/{item_id}")
def delete_item(conversation_id: str, item_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.delete_conversation_item(app, conversation_id, item_id)
