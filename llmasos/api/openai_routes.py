"""The OpenAI-compatible endpoints: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.api.embedding_inputs import refuse_over_window, shorten
from llmasos.api.errors import error_body
from llmasos.api.generation import Generation, request_sampling
from llmasos.api.logprobs import chat_logprobs, completion_logprobs
from llmasos.api.model_routes import apply_keep_alive
from llmasos.api.ollama_schemas import keep_alive_seconds
from llmasos.api.request_fields import (
    check_echo,
    completion_prompts,
    logprobs_tokenizer,
    refuse_media_parts,
)
from llmasos.api.response_format import StructuredOutput, structured_grammar
from llmasos.api.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from llmasos.api.tool_calls import chat_with_tools, messages_for_template, tool_request
from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import InvalidRequestError, LLMasOSError, ModelNotFoundError
from llmasos.kernel.admission import refuse_invalid_unicode
from llmasos.model.tokenizer import Tokenizer

router = APIRouter(tags=["openai"])

#: Names under which clients ask for the embedding model.
EMBEDDING_ALIASES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "embedding")


def _pid_headers(gen: Generation) -> dict[str, str]:
    # Clients can cancel or inspect the processes behind a request through /os/tasks/{pid}.
    return {"X-LLMasOS-Pids": ",".join(str(c.process.pid) for c in gen.choices)}


@router.get("/v1/models")
def list_models(request: Request, app: Caller) -> dict:
    """The models this app may use."""
    data = [
        {"id": m.name, "object": "model", "created": _epoch(m.created_at), "owned_by": "llmasos"}
        for m in request.app.state.store.list()
        if app.allows("model", m.name)
    ]
    if app.allows("model", EMBEDDING_ALIASES[0]):
        data.append({"id": EMBEDDING_ALIASES[0], "object": "model", "created": 0, "owned_by": "llmasos"})
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}")
def retrieve_model(model_id: str, request: Request, app: Caller) -> dict:
    """One model as /v1/models lists it; 404 in OpenAI's error shape for one that is unknown or that
    this app may not use (the same answer, so a key cannot probe what others may use)."""
    if model_id.lower() in EMBEDDING_ALIASES and app.allows("model", EMBEDDING_ALIASES[0]):
        return {"id": EMBEDDING_ALIASES[0], "object": "model", "created": 0, "owned_by": "llmasos"}
    manifest = request.app.state.store.get(model_id)  # ModelNotFoundError (404) says what exists
    if not app.allows("model", manifest.name):
        raise ModelNotFoundError(f"no model named {model_id!r} for this app; GET /v1/models lists its models")
    return {
        "id": manifest.name,
        "object": "model",
        "created": _epoch(manifest.created_at),
        "owned_by": "llmasos",
    }


def _epoch(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return 0


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, app: Caller
) -> JSONResponse | StreamingResponse:
    syscalls = request.app.state.syscalls
    refuse_media_parts(body.messages, body.model)
    messages = messages_for_template(body.messages)
    structured = StructuredOutput.of(body)
    tools = tool_request(body)  # checked whether or not the model will call them
    if tools is not None and tools.wants_calls:
        if structured is not None:
            raise InvalidRequestError(
                "response_format: cannot be combined with tools the model may call; send one or the "
                'other (or tool_choice "none")'
            )
        return await chat_with_tools(syscalls, app, body, tools, messages, request)
    sampling = await _sampling_for(syscalls, app, body, structured, messages=messages)
    keep_alive = keep_alive_seconds(body.keep_alive)
    gen = await Generation.start(
        syscalls,
        app,
        body.n,
        lambda i: syscalls.chat(app, body.model, messages, sampling(i), priority=body.priority),
        request,
    )
    apply_keep_alive(syscalls, app, gen.choices[0].process.model, keep_alive)
    meta = _Meta(f"chatcmpl-{gen.choices[0].process.pid}", int(time.time()), gen.choices[0].process.model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    tokenizer = await logprobs_tokenizer(syscalls, app, meta.model, body.logprobs)
    if body.stream:
        return _sse(_chat_chunks(gen, meta, request, include_usage, tokenizer), gen)
    await gen.wait(request)
    choices = [
        {
            "index": c.index,
            "message": {"role": "assistant", "content": "".join(c.text)},
            "finish_reason": c.finish_reason,
            "logprobs": chat_logprobs(tokenizer, c.logprobs) if tokenizer else None,
        }
        for c in gen.choices
    ]
    return JSONResponse(
        {**meta.fields("chat.completion"), "choices": choices, "usage": gen.usage()},
        headers=_pid_headers(gen),
    )


@router.post("/v1/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, app: Caller
) -> JSONResponse | StreamingResponse:
    syscalls = request.app.state.syscalls
    check_echo(body)
    prompts = await completion_prompts(syscalls, app, body)
    echoes = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    n = body.n
    sampling = await _sampling_for(syscalls, app, body, StructuredOutput.of(body), texts=prompts)

    def start(i: int):
        prompt = prompts[i // n]
        return syscalls.generate(app, body.model, prompt, sampling(i % n), priority=body.priority)

    keep_alive = keep_alive_seconds(body.keep_alive)
    gen = await Generation.start(syscalls, app, len(prompts) * n, start, request)
    apply_keep_alive(syscalls, app, gen.choices[0].process.model, keep_alive)
    meta = _Meta(f"cmpl-{gen.choices[0].process.pid}", int(time.time()), gen.choices[0].process.model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    tokenizer = await logprobs_tokenizer(syscalls, app, meta.model, body.logprobs)
    echo = [echoes[c.index // n] if body.echo else "" for c in gen.choices]
    if body.stream:
        return _sse(_completion_chunks(gen, meta, request, include_usage, tokenizer, echo), gen)
    await gen.wait(request)
    choices = [
        {
            "index": c.index,
            "text": echo[c.index] + "".join(c.text),
            "finish_reason": c.finish_reason,
            "logprobs": completion_logprobs(tokenizer, c.logprobs) if tokenizer else None,
        }
        for c in gen.choices
    ]
    usage = gen.usage()
    usage["prompt_tokens"] = sum(c.process.tokens_in for c in gen.choices[::n])
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return JSONResponse(
        {**meta.fields("text_completion"), "choices": choices, "usage": usage}, headers=_pid_headers(gen)
    )


async def _sampling_for(
    syscalls, app, body, structured: StructuredOutput | None, **prompt
) -> Callable[[int], SamplingParams]:
    """choice -> its SamplingParams; under response_format's grammar when the request has one."""
    if structured is None:
        return lambda i: request_sampling(body, i)
    grammar = await run_in_threadpool(structured_grammar, syscalls, app, body, structured, **prompt)
    return lambda i: structured.sampling(grammar, request_sampling(body, i))


@dataclass
class _EmbeddingResult:
    vectors: list[list[float]]
    usage: dict


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, app: Caller) -> dict:
    if body.model.lower() not in EMBEDDING_ALIASES:
        raise ModelNotFoundError(
            f"no embedding model {body.model!r}; this server embeds with {EMBEDDING_ALIASES[0]!r}"
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise InvalidRequestError("input must be a non-empty string or a list of non-empty strings")
    for i, text in enumerate(texts):  # the request model checked this too; the tokenizer must not see it
        refuse_invalid_unicode(text, f"input.{i}" if isinstance(body.input, list) else "input")

    def run() -> _EmbeddingResult:
        from llmasos.tools.embed import load_embedder

        embedder = load_embedder()
        listed = isinstance(body.input, list)
        refuse_over_window(embedder.tokenizer, embedder.max_seq_length, texts, EMBEDDING_ALIASES[0], listed)
        vectors, tokens = embedder.embed(texts)
        vectors = shorten(vectors, body.dimensions, EMBEDDING_ALIASES[0])
        return _EmbeddingResult(vectors, {"prompt_tokens": tokens, "completion_tokens": 0})

    syscalls = request.app.state.syscalls
    result = await run_in_threadpool(syscalls.invoke, app, "model", EMBEDDING_ALIASES[0], run, call="embed")
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
            for i, v in enumerate(result.vectors)
        ],
        "model": EMBEDDING_ALIASES[0],
        "usage": {
            "prompt_tokens": result.usage["prompt_tokens"],
            "total_tokens": result.usage["prompt_tokens"],
        },
    }


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    """OpenAI's clients ask for base64 (float32, little-endian) by default: a quarter of the bytes."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


# ---- streaming -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Meta:
    id: str
    created: int
    model: str

    def fields(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def _sse(chunks: AsyncIterator[Chunks], gen: Generation) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield "".join(map(_sse_event, chunk)) if isinstance(chunk, list) else _sse_event(chunk)

    headers = {**_pid_headers(gen), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


#: What a chunk generator yields: one chunk (a dict as JSON, or a literal such as `[DONE]`), or a list
#: of them sent in one write (a stream's end: its last choice's finish, the usage, `[DONE]`).
Chunks = dict | str | list[dict | str]


def _sse_event(chunk: dict | str) -> str:
    return f"data: {chunk if isinstance(chunk, str) else json.dumps(chunk)}\n\n"


def _error_chunk(err: LLMasOSError) -> dict:
    return error_body(err.message, err.type, err.type)


async def _chat_chunks(
    gen: Generation, meta: _Meta, request: Request, include_usage: bool, tokenizer: Tokenizer | None
) -> AsyncIterator[Chunks]:
    base = meta.fields("chat.completion.chunk")
    for c in gen.choices:
        yield {**base, "choices": [{"index": c.index, "delta": {"role": "assistant", "content": ""}}]}
    end: list[dict | str] = []  # the last choice's finish: sent with the usage and `[DONE]`, one write
    async for choice, event in gen.events(request):
        if event.finished:
            finish = [_error_chunk(event.error)] if event.error is not None else []
            delta = {"index": choice.index, "delta": {}, "finish_reason": choice.finish_reason}
            finish.append({**base, "choices": [delta]})
            if all(c.done for c in gen.choices):
                end = finish
            else:
                yield finish
        elif event.text or (tokenizer is not None and event.logprobs):
            delta = {"index": choice.index, "delta": {"content": event.text}, "finish_reason": None}
            if tokenizer is not None:
                delta["logprobs"] = chat_logprobs(tokenizer, event.logprobs)
            yield {**base, "choices": [delta]}
    if include_usage:
        end.append({**base, "choices": [], "usage": gen.usage()})
    yield [*end, "[DONE]"]


async def _completion_chunks(
    gen: Generation,
    meta: _Meta,
    request: Request,
    include_usage: bool,
    tokenizer: Tokenizer | None,
    echo: list[str],
) -> AsyncIterator[Chunks]:
    base = meta.fields("text_completion")
    for c in gen.choices:
        if echo[c.index]:
            item = {"index": c.index, "text": echo[c.index], "finish_reason": None, "logprobs": None}
            yield {**base, "choices": [item]}
    end: list[dict | str] = []  # the last choice's finish: sent with the usage and `[DONE]`, one write
    async for choice, event in gen.events(request):
        if event.finished:
            finish = [_error_chunk(event.error)] if event.error is not None else []
            item = {
                "index": choice.index,
                "text": "",
                "finish_reason": choice.finish_reason,
                "logprobs": None,
            }
            finish.append({**base, "choices": [item]})
            if all(c.done for c in gen.choices):
                end = finish
            else:
                yield finish
        elif event.text or (tokenizer is not None and event.logprobs):
            item = {"index": choice.index, "text": event.text, "finish_reason": None, "logprobs": None}
            if tokenizer is not None:
                offset = sum(len(t) for t in choice.text) - len(event.text)
                item["logprobs"] = completion_logprobs(tokenizer, event.logprobs, offset)
            yield {**base, "choices": [item]}
    if include_usage:
        end.append({**base, "choices": [], "usage": gen.usage()})
    yield [*end, "[DONE]"]
