"""Function calling on /v1/chat/completions: OpenAI's request and response shapes around the
function-calling program (llmasos/services/function_calling.py), which does the work below the
interfaces: which function, and arguments constrained to its schema.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from llmasos.api.generation import request_sampling
from llmasos.api.program_calls import program_pool
from llmasos.api.schemas import ChatCompletionRequest, ChatMessage
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App
from llmasos.services.base import Session
from llmasos.services.function_calling import Decision, Function, call_functions

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def messages_for_template(messages: list[ChatMessage]) -> list[dict]:
    """OpenAI messages, tool calls and results included, as plain role/content turns."""
    out = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        content = m.text()
        if m.tool_calls:
            calls = "; ".join(f"{c.function.name}({c.function.arguments})" for c in m.tool_calls)
            content = (content + "\n" if content else "") + f"Calling: {calls}"
        if m.role == "tool":
            content = f"Result{f' of {m.name}' if m.name else ''}: {content}"
        out.append({"role": role, "content": content})
    return out


def wants_tools(body: ChatCompletionRequest) -> bool:
    return bool(body.tools) and body.tool_choice != "none"


def _tool_choice(body: ChatCompletionRequest) -> str | None:
    """OpenAI's tool_choice as the program takes it: "auto" (None), "required", or a function name."""
    choice = body.tool_choice
    if choice is None or choice == "auto":
        return None
    if isinstance(choice, str):
        return choice
    return str(choice.function.get("name", ""))


async def chat_with_tools(
    syscalls: Syscalls, app: App, body: ChatCompletionRequest, messages: list[dict], request: Request
) -> JSONResponse | StreamingResponse:
    """Each choice either calls a function (arguments constrained to its schema) or answers."""
    functions = [
        Function(t.function.name, t.function.description or "", t.function.parameters)
        for t in body.tools or ()
    ]
    sampling = [request_sampling(body, i) for i in range(body.n)]

    def run(cancellation) -> tuple[list[Decision], dict]:
        session = Session(syscalls, app, body.model, cancellation, priority=body.priority)
        decisions = call_functions(session, messages, functions, _tool_choice(body), sampling)
        return decisions, session.usage

    decisions, usage = await program_pool(request).run(request, run)
    usage = {key: usage[key] for key in USAGE_KEYS}
    choices = [
        {"index": i, "message": _message(d), "finish_reason": d.finish_reason}
        for i, d in enumerate(decisions)
    ]
    fields = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "created": int(time.time()),
        "model": syscalls.resolve_model(body.model),
    }
    if not body.stream:
        return JSONResponse({**fields, "object": "chat.completion", "choices": choices, "usage": usage})
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = _chunks({**fields, "object": "chat.completion.chunk"}, choices, usage if include_usage else None)
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _message(decision: Decision) -> dict:
    """The assistant message of a choice, in OpenAI's shape."""
    if not decision.is_call:
        return {"role": "assistant", "content": decision.content}
    call = {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": decision.name, "arguments": decision.arguments},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


async def _chunks(base: dict, choices: list[dict], usage: dict | None) -> AsyncIterator[str]:
    """The finished choices as a stream: one delta each, then its finish reason."""
    for c in choices:
        delta = {"role": "assistant", **{k: v for k, v in c["message"].items() if k != "role"}}
        if "tool_calls" in delta:
            delta["tool_calls"] = [{"index": 0, **call} for call in delta["tool_calls"]]
        yield f"data: {json.dumps({**base, 'choices': [{'index': c['index'], 'delta': delta}]})}\n\n"
        finish = {"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"]}
        yield f"data: {json.dumps({**base, 'choices': [finish]})}\n\n"
    if usage is not None:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"
