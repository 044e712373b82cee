"""The Ollama API on the same server and port: /api/tags, /api/show, /api/ps, /api/chat, /api/generate,
/api/embed, /api/embeddings, /api/pull, /api/version.

Each route is a thin layer over the same system calls as the OpenAI routes (capabilities, quotas,
scheduling, audit). Errors take Ollama's shape `{"error": "..."}` (api/errors.py renders every
error under /api/ that way). Ollama's clients name models `name:tag`; `:latest` is dropped and names
match case-insensitively. What is accepted only for compatibility is listed in the README.
"""

from __future__ import annotations

import dataclasses
import json
import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.api.generation import Generation
from llmasos.api.model_routes import apply_keep_alive
from llmasos.api.ollama_models import TAG, embedding_name, library_name
from llmasos.api.ollama_models import router as models_router
from llmasos.api.ollama_replies import ReplyShape, Timing, reply, whole_reply
from llmasos.api.ollama_schemas import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    Message,
    keep_alive_seconds,
)
from llmasos.api.openai_routes import EMBEDDING_ALIASES
from llmasos.api.program_calls import program_pool
from llmasos.engine.constrained import Grammar
from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import ContextWindowExceededError, InvalidRequestError
from llmasos.kernel.sampling_request import sampling_params
from llmasos.kernel.syscalls import Syscalls
from llmasos.programs import Cancellation
from llmasos.security.apps import App
from llmasos.services.base import Session
from llmasos.services.function_calling import Decision, Function, call_functions

router = APIRouter(tags=["ollama"])
router.include_router(models_router)

#: The tokens a `format` answer may take when `options.num_predict` does not say.
DEFAULT_FORMAT_TOKENS = 256


# ---- generation ------------------------------------------------------------------------------


def _template_messages(messages: list[Message]) -> list[dict]:
    """Ollama messages, tool calls and results included, as the role/content turns templates take."""
    out = []
    for m in messages:
        if m.images:
            raise InvalidRequestError(
                "messages: images are not supported: this server's models have no vision"
            )
        message: dict = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:  # as structure, for the chat template's tool format or its fallback
            message["tool_calls"] = [
                {"type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in m.tool_calls
            ]
        if m.tool_name:
            message["name"] = m.tool_name
        out.append(message)
    return out


def _constrained(
    syscalls: Syscalls,
    app: App,
    model: str,
    messages: list[dict] | None,
    prompt: str,
    schema: dict,
    params: SamplingParams,
) -> SamplingParams:
    """`params` under the grammar of `schema` (the request's `format`), fitted to the context window."""
    tokenizer = syscalls.tokenizer(app, model)
    prompt_tokens = len(tokenizer.encode_chat(messages) if messages is not None else tokenizer.encode(prompt))
    room = syscalls.model_limits(app, model).context_length - prompt_tokens
    if room < 2:
        raise ContextWindowExceededError(
            f"the prompt leaves no room for the answer in {model}'s context window"
        )
    try:
        grammar = Grammar.json_schema(schema, tokenizer, min(params.max_tokens, room))
    except InvalidRequestError as err:
        raise InvalidRequestError(f"format: {err.message}") from None
    return dataclasses.replace(
        params,
        max_tokens=grammar.max_tokens,
        logits_processors=(grammar.processor(),),
        repetition_penalty=1.0,  # JSON repeats quotes, commas and braces by design
        stop=(),  # the grammar decides where the output ends
    )


def _sampling(body: ChatRequest | GenerateRequest) -> SamplingParams:
    body.check_unsupported()
    fields = body.options.sampling_fields()
    if body.format_schema() is not None and "max_tokens" not in fields:
        fields["max_tokens"] = DEFAULT_FORMAT_TOKENS
    return sampling_params(fields)


async def _load_only(
    request: Request, app: App, model: str, shape: ReplyShape, keep_alive: float | None
) -> JSONResponse:
    """An empty chat or prompt loads the model, as Ollama does (clients warm models up this way);
    with `keep_alive` 0 it unloads it once idle instead (done_reason "unload")."""
    timing = Timing()
    syscalls = request.app.state.syscalls
    if keep_alive == 0:
        syscalls.set_keep_alive(app, model, 0)
        reason = "unload"
    else:
        await run_in_threadpool(syscalls.preload, app, model)
        apply_keep_alive(syscalls, app, model, keep_alive)
        reason = "load"
    stats = timing.stats(0, 0)
    return JSONResponse(shape.final("", reason, {"total_duration": stats["total_duration"]}))


@router.post("/api/chat", response_model=None)
async def chat(body: ChatRequest, request: Request, app: Caller) -> JSONResponse | StreamingResponse:
    syscalls = request.app.state.syscalls
    model = library_name(request, body.model)
    params = _sampling(body)
    messages = _template_messages(body.messages)
    shape = ReplyShape(model + TAG, is_chat=True)
    if not messages:
        return await _load_only(request, app, model, shape, keep_alive_seconds(body.keep_alive))
    if body.tools:
        if body.format_schema() is not None:
            raise InvalidRequestError("format: cannot be combined with tools; send one or the other")
        return await _chat_with_tools(request, app, model, body, messages, params, shape)
    timing = Timing()
    if (schema := body.format_schema()) is not None:
        params = await run_in_threadpool(_constrained, syscalls, app, model, messages, "", schema, params)
    gen = await Generation.start(
        syscalls, app, 1, lambda _: syscalls.chat(app, model, messages, params), request
    )
    apply_keep_alive(syscalls, app, model, keep_alive_seconds(body.keep_alive))
    timing.mark("admitted")
    return await reply(gen, shape, timing, request, body.streams)


@router.post("/api/generate", response_model=None)
async def generate(body: GenerateRequest, request: Request, app: Caller) -> JSONResponse | StreamingResponse:
    syscalls = request.app.state.syscalls
    model = library_name(request, body.model)
    params = _sampling(body)
    shape = ReplyShape(model + TAG, is_chat=False)
    if not body.prompt:
        return await _load_only(request, app, model, shape, keep_alive_seconds(body.keep_alive))
    timing = Timing()
    if body.raw:  # the prompt is already formatted: no template, no system prompt
        if body.system:
            raise InvalidRequestError("system: not used with raw: true; put it in the prompt yourself")
        start = lambda _: syscalls.generate(app, model, body.prompt, params)  # noqa: E731
        messages = None
    else:  # Ollama applies the model's template to a prompt: a one-turn chat
        messages = [{"role": "system", "content": body.system}] if body.system else []
        messages.append({"role": "user", "content": body.prompt})
        start = lambda _: syscalls.chat(app, model, messages, params)  # noqa: E731
    if (schema := body.format_schema()) is not None:
        params = await run_in_threadpool(
            _constrained, syscalls, app, model, messages, body.prompt, schema, params
        )
    gen = await Generation.start(syscalls, app, 1, start, request)
    apply_keep_alive(syscalls, app, model, keep_alive_seconds(body.keep_alive))
    timing.mark("admitted")
    return await reply(gen, shape, timing, request, body.streams)


async def _chat_with_tools(
    request: Request,
    app: App,
    model: str,
    body: ChatRequest,
    messages: list[dict],
    params: SamplingParams,
    shape: ReplyShape,
) -> JSONResponse | StreamingResponse:
    """The function-calling program decides: a call (arguments valid under its schema) or an answer."""
    syscalls = request.app.state.syscalls
    functions = [
        Function(t.function.name, t.function.description or "", t.function.parameters)
        for t in body.tools or ()
    ]
    timing = Timing()

    def run(cancellation: Cancellation) -> tuple[Decision, dict]:
        session = Session(syscalls, app, model, cancellation)
        return call_functions(session, messages, functions, None, [params])[0], session.usage

    decision, usage = await program_pool(request).run(request, run)
    stats = timing.stats(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    if decision.is_call:
        arguments = json.loads(decision.arguments or "{}")
        message = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": decision.name, "arguments": arguments}}],
        }
        return await whole_reply(shape, message, "stop", stats, body.streams)
    message = {"role": "assistant", "content": decision.content or ""}
    return await whole_reply(
        shape, message, "length" if decision.finish_reason == "length" else "stop", stats, body.streams
    )


# ---- embeddings ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Embedded:
    vectors: list[list[float]]
    usage: dict


async def _embed(request: Request, app: App, texts: list[str], truncate: bool = True) -> _Embedded:
    """The embedding model's vectors, through the same system call as /v1/embeddings."""
    if not texts or any(not t for t in texts):
        raise InvalidRequestError("input: give a non-empty string or a list of non-empty strings")

    def run() -> _Embedded:
        from llmasos.tools.embed import load_embedder

        embedder = load_embedder()
        if not truncate:
            for i, text in enumerate(texts):
                if embedder.tokenizer.encode(text).overflowing:
                    raise ContextWindowExceededError(
                        f"input[{i}] is longer than the embedding model's {embedder.max_seq_length} tokens; "
                        'shorten it, or send "truncate": true to embed its beginning'
                    )
        vectors, tokens = embedder.embed(texts)
        return _Embedded(vectors, {"prompt_tokens": tokens, "completion_tokens": 0})

    syscalls = request.app.state.syscalls
    return await run_in_threadpool(syscalls.invoke, app, "model", EMBEDDING_ALIASES[0], run, call="embed")


def _shorten(vector: list[float], dimensions: int | None) -> list[float]:
    """The first `dimensions` components, renormalized to unit length (as Ollama and OpenAI do)."""
    if dimensions is None:
        return vector
    if dimensions > len(vector):
        raise InvalidRequestError(
            f"dimensions: the embedding model gives {len(vector)}; ask for at most that"
        )
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) or 1.0
    return [x / norm for x in head]


@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request, app: Caller) -> dict:
    model = embedding_name(body.model)
    keep_alive_seconds(body.keep_alive)
    timing = Timing()
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await _embed(request, app, texts, body.truncate)
    stats = timing.stats(result.usage["prompt_tokens"], 0)
    return {
        "model": model + TAG,
        "embeddings": [_shorten(v, body.dimensions) for v in result.vectors],
        "total_duration": stats["total_duration"],
        "load_duration": stats["load_duration"],
        "prompt_eval_count": result.usage["prompt_tokens"],
    }


@router.post("/api/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, app: Caller) -> dict:
    """Ollama's older embedding route: one prompt, one vector."""
    embedding_name(body.model)
    keep_alive_seconds(body.keep_alive)
    result = await _embed(request, app, [body.prompt])
    return {"embedding": result.vectors[0]}
