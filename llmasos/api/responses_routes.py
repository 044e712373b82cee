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
from llmasos.errors import InvalidRequestError, LLMasOSError
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
    priority: str | None = None  # LLMasOS: a lower class than the app's

    def request(self) -> flow.ResponseRequest:
        if self.tools:
            raise InvalidRequestError(
                "tools are not supported by /v1/responses here yet; use /v1/chat/completions for "
                "function calling"
            )
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
        )


@router.post("/v1/responses", response_model=None)
async def create_response(body: ResponseBody, request: Request, app: Caller) -> dict | StreamingResponse:
    syscalls = request.app.state.syscalls
    prepared = await run_in_threadpool(flow.prepare, syscalls, app, body.request())
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


async def _sse(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    number = 0
    async for event in events:
        event["sequence_number"] = number
        number += 1
        yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def _events(
    syscalls: Any, app: Any, prepared: flow.Prepared, gen: Generation, request: Request
) -> AsyncIterator[dict]:
    """OpenAI's stream of a response with one text message: created, in_progress, the item and its
    part added, text deltas, then each closed in turn, and completed (or failed)."""
    item_id, where = prepared.output_id, {"output_index": 0, "content_index": 0}
    yield {"type": "response.created", "response": flow.response_object(prepared, None, "in_progress")}
    yield {"type": "response.in_progress", "response": flow.response_object(prepared, None, "in_progress")}
    yield {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**flow.output_message(item_id, "", "in_progress"), "content": []},
    }
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield {"type": "response.content_part.added", "item_id": item_id, **where, "part": part}
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
    yield {"type": "response.output_text.done", "item_id": item_id, **where, "text": text, "logprobs": []}
    yield {"type": "response.content_part.done", "item_id": item_id, **where, "part": {**part, "text": text}}
    yield {"type": "response.output_item.done", "output_index": 0, "item": body["output"][0]}
    yield {"type": f"response.{body['status']}", "response": body}


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
