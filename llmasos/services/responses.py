"""One response of OpenAI's Responses API, over the system calls: where its history is, the context
assembled from it (`memory.py`), the model call, and what is kept afterwards.

    prepared = prepare(syscalls, app, ResponseRequest(model="default", input="Hi", conversation=cid))
    process = start(syscalls, app, prepared)          # an ordinary chat system call
    ... read the process's events ...
    body = finish(syscalls, app, prepared, text, finish_reason, process)

The interfaces (HTTP routes, the SDK in-process) drive these three steps and render the events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from llmasos.data.conversations import message_items
from llmasos.data.responses import Place, new_message_id, new_response_id
from llmasos.kernel.sampling_request import sampling_params
from llmasos.services import summaries
from llmasos.services.memory import Assembly, Limits, assemble


@dataclass(frozen=True)
class ResponseRequest:
    model: str
    input: Any
    instructions: str | None = None
    conversation: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    metadata: dict | None = None
    priority: str | None = None


@dataclass
class Prepared:
    request: ResponseRequest
    response_id: str
    output_id: str
    model: str  # canonical name
    place: Place
    inputs: list[tuple[str, str]]
    assembly: Assembly
    limits: Limits
    created_at: int
    seconds_assembling: float
    extra: dict = field(default_factory=dict)


def prepare(syscalls: Any, app: Any, request: ResponseRequest) -> Prepared:
    """Check the request, find its history and assemble the context (may load the model)."""
    inputs = message_items(request.input)
    model = syscalls.allowed_model(app, request.model)
    place = syscalls.response_place(app, request.conversation, request.previous_response_id)
    tokenizer = syscalls.tokenizer(app, model)
    limits = Limits.of(syscalls.model_limits(app, model).context_length, request.max_output_tokens)
    started = time.perf_counter()
    assembly = assemble(
        syscalls,
        app,
        tokenizer,
        model,
        place.conversation_id,
        place.upto,
        request.instructions,
        inputs,
        limits,
    )
    seconds = time.perf_counter() - started
    assembly.explain["assembly_ms"] = round(seconds * 1000, 3)
    return Prepared(
        request,
        new_response_id(),
        new_message_id(),
        model,
        place,
        inputs,
        assembly,
        limits,
        int(time.time()),
        seconds,
    )


def start(syscalls: Any, app: Any, prepared: Prepared) -> Any:
    """The model call: a chat process over the assembled messages."""
    request = prepared.request
    params = sampling_params(
        {
            "max_tokens": prepared.limits.max_output,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
    )
    return syscalls.chat(app, prepared.model, prepared.assembly.messages, params, priority=request.priority)


def response_object(
    prepared: Prepared,
    text: str | None,
    status: str,
    usage: tuple[int, int] | None = None,
    conversation_id: str | None = None,
    error: dict | None = None,
) -> dict:
    """The response in OpenAI's shape; `text` None: no output yet (the stream's first events)."""
    request = prepared.request
    output = []
    if text is not None:
        output.append(output_message(prepared.output_id, text, "completed"))
    tokens_in, tokens_out = usage or (0, 0)
    return {
        "id": prepared.response_id,
        "object": "response",
        "created_at": prepared.created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": prepared.model,
        "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": request.previous_response_id,
        "conversation": {"id": conversation_id or request.conversation} if request.conversation else None,
        "store": request.store,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "truncation": "auto",  # the context is assembled within the window, never refused for length
        "metadata": request.metadata or {},
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        }
        if usage
        else None,
    }


def output_message(item_id: str, text: str, status: str) -> dict:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def finish(
    syscalls: Any, app: Any, prepared: Prepared, text: str, finish_reason: str | None, process: Any
) -> dict:
    """Keep the exchange (and the response, with `store`), ask for a summary when turns fell out of
    the window; the finished response object."""
    status = "incomplete" if finish_reason == "length" else "completed"
    usage = (process.tokens_in, process.tokens_out)
    body = response_object(prepared, text, status, usage)
    request = prepared.request
    stored = syscalls.save_exchange(
        app,
        prepared.place,
        prepared.response_id,
        prepared.inputs,
        text,
        prepared.output_id,
        body if request.store else None,
        prepared.assembly.explain,
    )
    due = prepared.assembly.to_summarize
    if due is not None and stored.conversation_id == prepared.place.conversation_id:
        summaries.request_summary(
            syscalls, app, prepared.model, stored.conversation_id, due[0], due[1], prepared.limits.window
        )
    return body


def respond(syscalls: Any, app: Any, request: ResponseRequest) -> tuple[dict, Prepared]:
    """A whole response, blocking (the SDK's in-process path and the benchmarks): prepare, run, collect
    the text, finish; returns the response object and what was prepared (its context's explain)."""
    prepared = prepare(syscalls, app, request)
    process = start(syscalls, app, prepared)
    parts, reason = [], None
    for event in syscalls.events(app, process.pid):
        if event.finished:
            if event.error is not None:
                raise event.error
            reason = event.finish_reason
        else:
            parts.append(event.text)
    return finish(syscalls, app, prepared, "".join(parts), reason, process), prepared
