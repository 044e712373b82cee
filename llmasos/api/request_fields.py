"""OpenAI request fields that need more than a sampling parameter: each does what OpenAI documents or
is refused with a message that says why (issue 22: none is silently ignored).

- image, audio and file content parts: a clear 400, since no model this server runs has vision;
- completions' `suffix`: fill-in-the-middle where the model has FIM tokens, else a 400;
- completions' `echo`: the prompt before the completion (not with `logprobs`: the engine computes
  no logprobs of prompt tokens);
- `logprobs`: the tokenizer that spells the engine's token ids, when they were asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from llmasos.api.schemas import ChatMessage, CompletionRequest, TextPart
from llmasos.errors import InvalidRequestError
from llmasos.kernel.syscalls import Syscalls
from llmasos.model.tokenizer import Tokenizer
from llmasos.security.apps import App

#: Fill-in-the-middle tokens as models spell them: StarCoder/SmolLM (`<fim_prefix>`) and Qwen2.5-Coder
#: (`<|fim_prefix|>`), each (prefix, suffix, middle).
FIM_SPELLINGS = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
)


def refuse_media_parts(messages: Sequence[ChatMessage], model: str) -> None:
    """InvalidRequestError naming the first non-text content part: this server's models read text."""
    for i, message in enumerate(messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if not isinstance(part, TextPart):
                raise InvalidRequestError(
                    f"messages.{i}.content.{j}: {part.type!r} parts need a model with vision or audio "
                    f"input, and {model!r} reads text only; send the content as text parts"
                )


async def logprobs_tokenizer(syscalls: Syscalls, app: App, model: str, wanted: Any) -> Tokenizer | None:
    """The tokenizer of `model` when the request asked for logprobs (`wanted` is true or a number)."""
    if wanted is None or wanted is False:
        return None
    return await run_in_threadpool(syscalls.tokenizer, app, model)


def check_echo(body: CompletionRequest) -> None:
    if body.echo and body.logprobs is not None:
        raise InvalidRequestError(
            "echo with logprobs would need the logprobs of the prompt's tokens, which this server does "
            "not compute; ask for one of them"
        )


async def completion_prompts(
    syscalls: Syscalls, app: App, body: CompletionRequest
) -> list[str] | list[list[int]]:
    """The prompts to generate from: as given, or with `suffix`, each as the model's
    fill-in-the-middle token ids (prefix, prompt, suffix, text, middle)."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise InvalidRequestError("prompt is an empty list; give at least one prompt")
    if not body.suffix:
        return prompts
    tokenizer = await run_in_threadpool(syscalls.tokenizer, app, body.model)
    prefix, suffix, middle = _fim_tokens(tokenizer, body.model)
    suffix_ids = tokenizer.encode(body.suffix, add_special_tokens=False)
    return [
        [prefix, *tokenizer.encode(p, add_special_tokens=False), suffix, *suffix_ids, middle] for p in prompts
    ]


def _fim_tokens(tokenizer: Tokenizer, model: str) -> tuple[int, int, int]:
    for spelling in FIM_SPELLINGS:
        ids = [tokenizer.backend.token_to_id(token) for token in spelling]
        if all(i is not None for i in ids):
            return ids[0], ids[1], ids[2]  # type: ignore[return-value]
    raise InvalidRequestError(
        f"suffix: model {model!r} has no fill-in-the-middle tokens, so it cannot complete between a "
        "prompt and a suffix; leave suffix out, or use a code model that has them (e.g. qwen2.5-coder)"
    )
