"""OpenAI's `/v1/responses` (create, with `previous_response_id`, `conversation`, `store` and the
streaming events of OpenAI's shapes; retrieve, delete, input items) and LLMasOS's
`GET /os/responses/{id}/context`: what went into the model's context for a response, and why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.api.files_routes import page_request
from llmasos.api.generation import Generation
from llmasos.data.search import MAX_RESULTS
from llmasos.errors import InvalidRequestError, LLMasOSError
from llmasos.services import citing
from llmasos.services import responses as flow

router = APIRouter(tags=["responses"])


class ResponseBody(BaseModel):
    """The fields of `responses.create` that LLMasOS reads; others are ignored, as OpenAI's own."""

    model_config = ConfigDict(extra="ignore")

    model: str = "default"
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    conversation: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None
    include: list[str] | None = None
    priority: str | None = None  # LLMasOS: a lower class than the app's

    def request(self) -> flow.ResponseRequest:
        file_search, memory_tools = _tools(self.tools or [], self.include or [])
        conversation = self.conversation
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
            if not isinstance(conversation, str):
                raise InvalidRequestError('conversation must be an id or {"id": ...}')
        return flow.ResponseRequest(
            model=self.model,
            input=self.input,
            instructions=self.instructions,
            conversation=conversation,
            previous_response_id=self.previous_response_id,
            store=self.store,
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            metadata=self.metadata,
            priority=self.priority,
            file_search=file_search,
            memory_tools=memory_tools,
        )


def _tools(tools: list[dict[str, Any]], include: list[str]) -> tuple[flow.FileSearch | None, bool]:
    """The tools a response may use: OpenAI's `file_search` (one), and LLMasOS's `core_memory` (the
    model keeps the conversation's facts); others are refused with what to use instead."""
    file_search, memory_tools = None, False
    for index, tool in enumerate(tools):
        kind = tool.get("type")
        if kind == "file_search" and file_search is None:
            file_search = _file_search(tool, index, "file_search_call.results" in include)
        elif kind == "core_memory":
            memory_tools = True
        else:
            raise InvalidRequestError(
                f"tools[{index}]: type {kind!r} is not supported by /v1/responses here (file_search, "
                "once, and core_memory are); use /v1/chat/completions for function calling"
            )
    return file_search, memory_tools


def _file_search(tool: dict[str, Any], index: int, include_results: bool) -> flow.FileSearch:
    ids = tool.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidRequestError(f"tools[{index}].vector_store_ids must be a non-empty list of store ids")
    if tool.get("filters") is not None:
        raise InvalidRequestError(
            f"tools[{index}].filters is not supported with file_search here; search a store with "
            "filters through /v1/vector_stores/{id}/search"
        )
    top = tool.get("max_num_results", citing.TOP_K)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_RESULTS:
        raise InvalidRequestError(
            f"tools[{index}].max_num_results must be an integer from 1 to {MAX_RESULTS}"
        )
    return flow.FileSearch(tuple(ids), top, include_results)


@router.post("/v1/responses", response_model=None)
async def create_response(body: ResponseBody, request: Request, app: Caller) -> dict | StreamingResponse:
    syscalls = request.app.state.syscalls
    prepared = await run_in_threadpool(flow.prepare, syscalls, app, body.request())
    if not prepared.needs_model:  # e.g. file_search found nothing relevant: "I don't know", unasked
        return await _answered(syscalls, app, prepared, body.stream)
    gen = await Generation.start(syscalls, app, 1, lambda _: flow.start(syscalls, app, prepared))
    if body.stream:
        events = _events(syscalls, app, prepared, gen, request)
        return StreamingResponse(
            _sse(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    await gen.wait(request)
    choice = gen.choices[0]
    return await run_in_threadpool(
        flow.finish, syscalls, app, prepared, "".join(choice.text), choice.finish_reason, choice.process
    )


async def _answered(syscalls: Any, app: Any, prepared: flow.Prepared, stream: bool) -> Any:
    """A response whose text the system gave without the model, as a body or the same events."""
    body = await run_in_threadpool(flow.finish, syscalls, app, prepared, prepared.fixed_text, "stop", None)
    if not stream:
        return body

    async def events() -> AsyncIterator[dict]:
        for event in _opening(prepared):
            yield event
        for event in _closing(prepared, body, prepared.fixed_text):
            yield event

    return StreamingResponse(
        _sse(events()), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _sse(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    number = 0
    async for event in events:
        event["sequence_number"] = number
        number += 1
        yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _where(prepared: flow.Prepared) -> dict:
    """The message's place among the output items (after the tool items)."""
    return {"output_index": len(flow.tool_items(prepared)), "content_index": 0}


def _opening(prepared: flow.Prepared) -> list[dict]:
    """created, in_progress, the tool items done (they ran before the answer), the message and its
    part added."""
    waiting = flow.response_object(prepared, None, "in_progress")
    events = [
        {"type": "response.created", "response": waiting},
        {"type": "response.in_progress", "response": waiting},
    ]
    for index, item in enumerate(flow.tool_items(prepared)):
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    where = _where(prepared)
    item = {**flow.output_message(prepared.output_id, "", "in_progress"), "content": []}
    events.append({"type": "response.output_item.added", "output_index": where["output_index"], "item": item})
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events.append(
        {"type": "response.content_part.added", "item_id": prepared.output_id, **where, "part": part}
    )
    return events


def _closing(prepared: flow.Prepared, body: dict, text: str) -> list[dict]:
    """The text, its part and the message closed in turn, then completed (or incomplete)."""
    item_id, where = prepared.output_id, _where(prepared)
    message = body["output"][-1]
    events = []
    for index, note in enumerate(message["content"][0]["annotations"]):
        events.append(
            {
                "type": "response.output_text.annotation.added",
                "item_id": item_id,
                **where,
                "annotation_index": index,
                "annotation": note,
            }
        )
    part = message["content"][0]
    events += [
        {"type": "response.output_text.done", "item_id": item_id, **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", "item_id": item_id, **where, "part": part},
        {"type": "response.output_item.done", "output_index": where["output_index"], "item": message},
        {"type": f"response.{body['status']}", "response": body},
    ]
    return events


async def _events(
    syscalls: Any, app: Any, prepared: flow.Prepared, gen: Generation, request: Request
) -> AsyncIterator[dict]:
    """OpenAI's stream of a response: `_opening`, text deltas, then `_closing` (or failed)."""
    item_id, where = prepared.output_id, _where(prepared)
    for event in _opening(prepared):
        yield event
    choice = gen.choices[0]
    async for _, event in gen.events(request):
        if event.text:
            yield {
                "type": "response.output_text.delta",
                "item_id": item_id,
                **where,
                "delta": event.text,
                "logprobs": [],
            }
    if choice.error is not None or not choice.done:
        error = choice.error or LLMasOSError("the client went away")
        failed = flow.response_object(
            prepared, None, "failed", error={"code": error.type, "message": error.message}
        )
        yield {"type": "response.failed", "response": failed}
        return
    text = "".join(choice.text)
    try:
        body = await run_in_threadpool(
            flow.finish, syscalls, app, prepared, text, choice.finish_reason, choice.process
        )
    except LLMasOSError as err:  # e.g. the data quota: the answer was given but could not be kept
        failed = flow.response_object(
            prepared, text, "failed", error={"code": err.type, "message": err.message}
        )
        yield {"type": "response.failed", "response": failed}
        return
    for event in _closing(prepared, body, text):
        yield event


@router.get("/v1/responses/{response_id}")
def get_response(response_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.get_response(app, response_id)


@router.delete("/v1/responses/{response_id}")
def delete_response(response_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.delete_response(app, response_id)


@router.get("/v1/responses/{response_id}/input_items")
def response_input_items(
    response_id: str,
    request: Request,
    app: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    page = page_request(limit, after, order)
    return request.app.state.syscalls.response_input_items(app, response_id, page)


@router.get("/os/responses/{response_id}/context")
def response_context(response_id: str, request: Request, app: Caller) -> dict:
    """What went into the model's context for a stored response, block by block, and why."""
    return request.app.state.syscalls.response_context(app, response_id)
