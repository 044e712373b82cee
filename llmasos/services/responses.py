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
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llmasos.data.app_data import new_id
from llmasos.data.conversations import message_items
from llmasos.data.responses import Place, new_message_id, new_response_id
from llmasos.data.search import Hit
from llmasos.errors import InvalidRequestError
from llmasos.kernel.sampling_request import sampling_params
from llmasos.services import citing, summaries
from llmasos.services.memory import Assembly, Limits, assemble
from llmasos.services.memory_tools import MemoryCall, keep_facts


@dataclass(frozen=True)
class FileSearch:
    """OpenAI's `file_search` tool: answer from these vector stores of the app, with citations."""

    vector_store_ids: tuple[str, ...]
    max_num_results: int = citing.TOP_K
    include_results: bool = False  # `include=["file_search_call.results"]`


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
    file_search: FileSearch | None = None
    memory_tools: bool = False  # LLMasOS: offer the model core_memory_append / core_memory_replace


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
    passages: list[Hit] = field(default_factory=list)  # retrieved by file_search, cited by the answer
    search_call_id: str | None = None  # the file_search_call output item's id
    fixed_text: str | None = None  # an answer given without the model (nothing relevant retrieved)
    memory_calls: list[MemoryCall] = field(default_factory=list)

    @property
    def needs_model(self) -> bool:
        return self.fixed_text is None


def prepare(syscalls: Any, app: Any, request: ResponseRequest) -> Prepared:
    """Check the request, find its history, run its tools (file search, memory tools) and assemble
    the context (may load the model)."""
    inputs = message_items(request.input)
    model = syscalls.allowed_model(app, request.model)
    syscalls.check_storable(app, inputs)
    place = syscalls.response_place(app, request.conversation, request.previous_response_id)
    if request.memory_tools and not (request.conversation and place.conversation_id):
        raise InvalidRequestError(
            "the core_memory tools keep a conversation's facts: send them with a conversation"
        )
    passages, instructions = [], request.instructions
    if request.file_search is not None:
        question = " ".join(text for role, text in inputs if role == "user") or inputs[-1][1]
        search = request.file_search
        passages = citing.retrieve(
            syscalls, app, list(search.vector_store_ids), question, search.max_num_results
        )
    tokenizer = syscalls.tokenizer(app, model)
    limits = Limits.of(syscalls.model_limits(app, model).context_length, request.max_output_tokens)
    if passages:
        passages = _fitting(passages, tokenizer, request.instructions, limits.budget // 2)
        instructions = citing.instructions(passages, request.instructions)
    started = time.perf_counter()

    def assembled() -> Assembly:
        return assemble(
            syscalls, app, tokenizer, model, place.conversation_id, place.upto, instructions, inputs, limits
        )

    assembly = assembled()
    seconds = time.perf_counter() - started
    memory_calls = []
    if request.memory_tools:
        sampling = sampling_params({"temperature": request.temperature, "seed": request.seed})
        memory_calls = keep_facts(
            syscalls, app, model, place.conversation_id, assembly.messages, sampling, request.priority
        )
        if any(call.error is None for call in memory_calls):
            assembly = assembled()  # the new core block goes into this answer's context already
    assembly.explain["assembly_ms"] = round(seconds * 1000, 3)
    if request.file_search is not None:
        assembly.explain["blocks"].insert(0, _file_search_block(passages))
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
        passages=passages,
        search_call_id=new_id("fs_") if request.file_search is not None else None,
        fixed_text=citing.DONT_KNOW if request.file_search is not None and not passages else None,
        memory_calls=memory_calls,
    )


def _fitting(passages: list[Hit], tokenizer: Any, base: str | None, room: int) -> list[Hit]:
    """The best passages whose instructions fit in `room` tokens (half the window: the new message
    and the conversation's memory need the rest); the worst are left out first."""
    while len(passages) > 1 and len(tokenizer.encode(citing.instructions(passages, base))) > room:
        passages = passages[:-1]
    return passages


def _file_search_block(passages: list[Hit]) -> dict:
    """The explain record of the passages that file_search put into the context."""
    if not passages:
        return {"kind": "file_search", "passages": [], "reason": "nothing relevant retrieved: not asked"}
    cited = [{"file_id": h.file_id, "chunk": h.ordinal, "span": [h.start, h.end]} for h in passages]
    return {"kind": "file_search", "passages": cited, "reason": "passages retrieved for the question"}


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
    output = []  # no items before the answer's text: a stream announces them itself
    if text is not None:
        output += tool_items(prepared)
        annotations = citing.annotations(text, prepared.passages) if prepared.passages else []
        output.append(output_message(prepared.output_id, text, "completed", annotations))
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
        "tools": _tools(request),
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


def output_message(item_id: str, text: str, status: str, annotations: list[dict] | None = None) -> dict:
    part = {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}


def tool_items(prepared: Prepared) -> list[dict]:
    """The output items before the message: the memory tools the system ran, then the file search
    (OpenAI's `file_search_call`, with its results when they were asked for)."""
    items = [call.output_item(new_id("mc_")) for call in prepared.memory_calls]
    request = prepared.request
    if request.file_search is not None:
        question = " ".join(text for role, text in prepared.inputs if role == "user")
        results = citing.search_results(prepared.passages) if request.file_search.include_results else None
        items.append(
            {
                "id": prepared.search_call_id,
                "type": "file_search_call",
                "status": "completed",
                "queries": [question],
                "results": results,
            }
        )
    return items


def _tools(request: ResponseRequest) -> list[dict]:
    tools = []
    if request.file_search is not None:
        search = request.file_search
        tools.append(
            {
                "type": "file_search",
                "vector_store_ids": list(search.vector_store_ids),
                "max_num_results": search.max_num_results,
            }
        )
    if request.memory_tools:
        tools.append({"type": "core_memory"})
    return tools


def finish(
    syscalls: Any, app: Any, prepared: Prepared, text: str, finish_reason: str | None, process: Any
) -> dict:
    """Keep the exchange (and the response, with `store`), ask for a summary when turns fell out of
    the window; the finished response object."""
    status = "incomplete" if finish_reason == "length" else "completed"
    usage = (process.tokens_in, process.tokens_out) if process is not None else (0, 0)
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


def page(
    syscalls: Any, app: Any, model: str, conversation_id: str, max_output_tokens: int | None = None
) -> Future | None:
    """Page a conversation's memory with no answer: its context assembled as for a next message, and
    the running summary requested in the background when turns fell out of the window (for items
    added with `conversations.items.create`, which ask the model nothing). The summary's future, or
    None when nothing is due (or one is being written)."""
    model = syscalls.allowed_model(app, model)
    place = syscalls.response_place(app, conversation_id, None)
    limits = Limits.of(syscalls.model_limits(app, model).context_length, max_output_tokens)
    tokenizer = syscalls.tokenizer(app, model)
    assembly = assemble(syscalls, app, tokenizer, model, place.conversation_id, None, None, [], limits)
    due = assembly.to_summarize
    if due is None:
        return None
    return summaries.request_summary(
        syscalls, app, model, place.conversation_id, due[0], due[1], limits.window
    )


def respond(syscalls: Any, app: Any, request: ResponseRequest) -> tuple[dict, Prepared]:
    """A whole response, blocking (the SDK's in-process path and the benchmarks): prepare, run, collect
    the text, finish; returns the response object and what was prepared (its context's explain)."""
    prepared = prepare(syscalls, app, request)
    if not prepared.needs_model:
        return finish(syscalls, app, prepared, prepared.fixed_text, "stop", None), prepared
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
