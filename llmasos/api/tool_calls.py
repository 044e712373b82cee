"""Function calling on /v1/chat/completions: OpenAI's request and response shapes around the
function-calling program (llmasos/services/function_calling.py), which does the work below the
interfaces: which functions, and arguments constrained to their schemas.

Both spellings are taken: `tools` / `tool_choice` / `parallel_tool_calls`, and the legacy
`functions` / `function_call` (answered with `message.function_call` and finish reason
"function_call", one call a turn, as OpenAI answers them). Every schema and the choice are checked
when the request arrives, so a request never succeeds or fails by what the model happens to pick.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from llmasos.api.generation import request_sampling
from llmasos.api.program_calls import program_pool
from llmasos.api.schemas import ChatCompletionRequest, ChatMessage
from llmasos.api.tool_stream import ToolStream
from llmasos.errors import InvalidRequestError
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App
from llmasos.services.base import Session
from llmasos.services.function_calling import (
    Decision,
    Function,
    OnEvent,
    call_functions,
    check_functions,
)

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True)
class ToolRequest:
    """What a request asks of function calling, whichever spelling it used."""

    functions: list[Function]
    choice: str | None  # None ("auto"), "required", "none", or a function's name
    parallel: bool  # several calls in one turn allowed
    legacy: bool  # `functions`/`function_call`: answered with `function_call`

    @property
    def wants_calls(self) -> bool:
        return self.choice != "none"


def tool_request(body: ChatCompletionRequest) -> ToolRequest | None:
    """The request's functions and choice, checked (InvalidRequestError naming the field), or None
    when it offers none."""
    if body.tools and body.functions:
        raise InvalidRequestError("give either tools or the legacy functions, not both")
    if body.tools:
        functions = [_function(t.function) for t in body.tools]
        choice = _choice(body.tool_choice, "tool_choice")
        request = ToolRequest(functions, choice, body.parallel_tool_calls is not False, legacy=False)
        path = "tools[{}].function.parameters"
    elif body.functions:
        functions = [_function(f) for f in body.functions]
        choice = _choice(body.function_call, "function_call")
        request = ToolRequest(functions, choice, parallel=False, legacy=True)
        path = "functions[{}].parameters"
    else:
        if body.tool_choice not in (None, "none", "auto") or body.function_call not in (None, "none", "auto"):
            raise InvalidRequestError("tool_choice asks for a call but the request gives no tools")
        return None
    check_functions(request.functions, request.choice, path)
    return request


def _function(definition) -> Function:
    return Function(definition.name, definition.description or "", definition.parameters)


def _choice(choice, field: str) -> str | None:
    """OpenAI's tool_choice/function_call as the program takes it."""
    if choice is None or choice == "auto":
        return None
    if isinstance(choice, str):
        return choice
    name = choice.function.get("name") if hasattr(choice, "function") else choice.get("name")
    if not name:
        raise InvalidRequestError(f"{field} names no function: give {{'name': ...}}")
    return str(name)


def messages_for_template(messages: list[ChatMessage]) -> list[dict]:
    """OpenAI messages as chat templates take them: tool calls (arguments as objects) and tool
    results kept as structure, for the template's tool format or its fallback to render."""
    out = []
    for index, m in enumerate(messages):
        message: dict = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        calls = [(c.id, c.function) for c in m.tool_calls or ()]
        if m.function_call is not None:  # legacy: one call, no id
            calls.append((f"call_{index}", m.function_call))
        if calls:
            message["tool_calls"] = [
                {
                    "id": id_,
                    "type": "function",
                    "function": {"name": f.name, "arguments": _parsed(f.arguments)},
                }
                for id_, f in calls
            ]
        if m.role == "function":  # legacy result: answers the function call just before it
            message.update(role="tool", tool_call_id=f"call_{index - 1}")
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        out.append(message)
    return out


def _parsed(arguments: str) -> object:
    # Templates write arguments with `tojson`: an object, or the text when it is not JSON.
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


async def chat_with_tools(
    syscalls: Syscalls,
    app: App,
    body: ChatCompletionRequest,
    tools: ToolRequest,
    messages: list[dict],
    request: Request,
) -> JSONResponse | StreamingResponse:
    """Each choice either calls functions (arguments constrained to their schemas) or answers."""
    sampling = [request_sampling(body, i) for i in range(body.n)]

    def run(on_event: OnEvent | None):
        def program(cancellation) -> tuple[list[Decision], dict]:
            session = Session(syscalls, app, body.model, cancellation, priority=body.priority)
            decisions = call_functions(
                session,
                messages,
                tools.functions,
                tools.choice,
                sampling,
                parallel=tools.parallel,
                on_event=on_event,
            )
            return decisions, {key: session.usage[key] for key in USAGE_KEYS}

        return program

    fields = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "created": int(time.time()),
        "model": syscalls.resolve_model(body.model),
    }
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        base = {**fields, "object": "chat.completion.chunk"}
        limits = syscalls.output_limits()  # the kernel's reader timeout holds for the tool stream too
        stream = ToolStream(base, tools.legacy, include_usage, limits and limits.reader_timeout_seconds)
        return await stream.start(program_pool(request), run(stream.on_event))
    decisions, usage = await program_pool(request).run(request, run(None))
    choices = [
        {"index": i, "message": message(d, tools.legacy), "finish_reason": finish_reason(d, tools.legacy)}
        for i, d in enumerate(decisions)
    ]
    return JSONResponse({**fields, "object": "chat.completion", "choices": choices, "usage": usage})


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def finish_reason(decision: Decision, legacy: bool) -> str:
    if decision.is_call and legacy:
        return "function_call"
    return decision.finish_reason


def message(decision: Decision, legacy: bool) -> dict:
    """The assistant message of a choice, in OpenAI's shape."""
    if not decision.is_call:
        return {"role": "assistant", "content": decision.content}
    if legacy:
        call = decision.calls[0]
        return {"role": "assistant", "content": None, "function_call": _call_function(call)}
    calls = [{"id": call_id(), "type": "function", "function": _call_function(c)} for c in decision.calls]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def _call_function(call) -> dict:
    return {"name": call.name, "arguments": call.arguments}
