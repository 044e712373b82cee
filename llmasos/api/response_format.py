"""`response_format` on /v1/chat/completions and /v1/completions: JSON guaranteed by constrained decoding.

`{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` constrains the output to the
schema, `{"type": "json_object"}` to any JSON object (with a `schema`, to that schema). The schema is
checked when the request arrives (a 400 naming its JSON path, whatever the model would have written);
the grammar is then built for the model's tokenizer and bounded so that the value completes within
the request's `max_tokens` (or DEFAULT_STRUCTURED_TOKENS when it sets none), so the answer ends with
`finish_reason` "stop" and parses. Stop strings are not applied (the grammar decides where the value
ends) and the repetition penalty is off (JSON repeats quotes, commas and braces by design).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmasos.api.schemas import ChatCompletionRequest, CompletionRequest, ResponseFormat
from llmasos.engine.json_schema import check_schema
from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import ContextWindowExceededError, InvalidRequestError
from llmasos.kernel.syscalls import Syscalls

if TYPE_CHECKING:
    from llmasos.engine.constrained import Grammar
from llmasos.security.apps import App

#: The budget of a structured answer whose request sets no max_tokens: room for a useful value
#: (the bounds scale with it) without letting one request hold the engine for long.
DEFAULT_STRUCTURED_TOKENS = 2048


@dataclass(frozen=True)
class StructuredOutput:
    """What a request's response_format asks for: a schema (json_schema), or any object (None)."""

    schema: dict | bool | None
    field: str  # where the request named it, for messages

    @classmethod
    def of(cls, body: ChatCompletionRequest | CompletionRequest) -> StructuredOutput | None:
        """None for text; else the request's structure, its schema checked now (400 naming the path)."""
        fmt: ResponseFormat | None = body.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            where = "response_format" if fmt.object_schema is None else "response_format.schema"
            found = cls(fmt.object_schema, where)
        elif fmt.json_schema is None:
            raise InvalidRequestError(
                'response_format.json_schema is missing; send {"type": "json_schema", "json_schema": '
                '{"name": ..., "schema": {...}}}'
            )
        else:
            found = cls(fmt.json_schema.json_schema, "response_format.json_schema.schema")
        if found.schema is not None:
            check_schema(found.schema, found.field)
        return found

    def grammar(
        self, syscalls: Syscalls, app: App, model: str, prompt_tokens: int, max_tokens: int | None
    ) -> Grammar:
        """The grammar for `model`, fitted to `max_tokens` and to the room the prompt leaves."""
        room = syscalls.model_limits(app, model).context_length - prompt_tokens
        if room < 2:
            raise ContextWindowExceededError(
                f"the prompt leaves no room for the answer in {model}'s context window; shorten it"
            )
        budget = min(max_tokens or DEFAULT_STRUCTURED_TOKENS, room)
        tokenizer = syscalls.tokenizer(app, model)
        # Imported here: the grammar's module imports torch, which a starting server loads only with
        # its first model (so that it answers and resumes workflow runs meanwhile).
        from llmasos.engine.constrained import Grammar

        try:
            if self.schema is None:
                return Grammar.json_object(tokenizer, budget)
            return Grammar.json_schema(self.schema, tokenizer, budget)
        except InvalidRequestError as err:
            raise type(err)(f"{self.field}: {err.message}") from None

    @staticmethod
    def sampling(grammar: Grammar, params: SamplingParams) -> SamplingParams:
        """`params` of one choice under `grammar` (each choice gets its own logits processor)."""
        return dataclasses.replace(
            params,
            max_tokens=grammar.max_tokens,
            logits_processors=(*params.logits_processors, grammar.processor()),
            repetition_penalty=1.0,
            stop=(),
        )


def requested_max_tokens(body: ChatCompletionRequest | CompletionRequest) -> int | None:
    return body.max_completion_tokens or body.max_tokens


def structured_grammar(
    syscalls: Syscalls,
    app: App,
    body: ChatCompletionRequest | CompletionRequest,
    structured: StructuredOutput,
    texts: list[str] | None = None,
    messages: list[dict] | None = None,
) -> Grammar:
    """The grammar of a chat (`messages`) or completion (`texts`, the longest one counts) request.
    Blocking (it may load the model): call it off the event loop."""
    tokenizer = syscalls.tokenizer(app, body.model)
    if messages is not None:
        prompt_tokens = len(tokenizer.encode_chat(messages))
    else:
        prompt_tokens = max(len(tokenizer.encode(t)) for t in texts or [""])
    return structured.grammar(syscalls, app, body.model, prompt_tokens, requested_max_tokens(body))
