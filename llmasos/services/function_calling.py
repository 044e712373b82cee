"""Function calling: the model decides which function to call (or to answer in words), and its call
is always valid. One program over the chat system call, shared by every interface that offers
OpenAI-style `tools` (the OpenAI routes now; the Ollama routes and the SDK later).

For each choice, two constrained steps, each an ordinary chat process of the calling app:
1. which function to call, or none ("auto"): the output is constrained to exactly one of the
   function names (plus "answer" under "auto"); a named tool choice skips this step;
2. the arguments: JSON constrained to the function's `parameters` schema, so they always parse and
   validate — no retry loop, whatever the model (a 135M model included).
When the model answers instead of calling, the answer is generated as in any chat completion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from llmasos.engine.constrained import Grammar
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import InvalidRequestError
from llmasos.services.base import Call, Session

ANSWER = "answer"  # the "auto" option that means: reply in words, call nothing
ARGUMENT_TOKENS = 256  # the most tokens a call's arguments may take
CHOICES = ("auto", "required", "none")


@dataclass(frozen=True)
class Function:
    """A function the model may call: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class Decision:
    """One choice's outcome: a call (`name`, `arguments` as JSON text) or an answer in words."""

    name: str | None = None
    arguments: str | None = None
    content: str | None = None
    finish_reason: str = "tool_calls"

    @property
    def is_call(self) -> bool:
        return self.name is not None


def call_functions(
    session: Session,
    messages: list[dict],
    functions: list[Function],
    tool_choice: str | None,
    sampling: list[SamplingParams],
) -> list[Decision]:
    """One decision per entry of `sampling` (a choice each). `tool_choice` is "auto" (None),
    "required", or the name of the function to call."""
    by_name = {f.name: f for f in functions}
    if tool_choice not in (None, *CHOICES) and tool_choice not in by_name:
        raise InvalidRequestError(f"tool_choice names {tool_choice!r}, which is not among the tools given")
    return [_decide(session, messages, by_name, tool_choice, params) for params in sampling]


def _decide(
    session: Session,
    messages: list[dict],
    functions: dict[str, Function],
    tool_choice: str | None,
    sampling: SamplingParams,
) -> Decision:
    if tool_choice == "none":
        return _answer(session, messages, sampling)
    name = (
        tool_choice
        if tool_choice in functions
        else _which(session, messages, functions, tool_choice, sampling)
    )
    if name == ANSWER:
        return _answer(session, messages, sampling)
    return Decision(name, _arguments(session, messages, functions[name], sampling))


def _which(
    session: Session,
    messages: list[dict],
    functions: dict[str, Function],
    tool_choice: str | None,
    sampling: SamplingParams,
) -> str:
    """Step 1: the function the conversation needs (or ANSWER under "auto")."""
    required = tool_choice == "required"
    options = list(functions) + ([] if required else [ANSWER])
    catalog = "\n".join(f"- {f.name}: {f.description or 'no description'}" for f in functions.values())
    instruction = (
        f"You can call these functions:\n{catalog}\n"
        "Reply with the name of the function that the user's last message needs"
        + ("." if required else f", or with {ANSWER!r} to reply in words.")
    )
    grammar = Grammar.choice(options, session.tokenizer)
    return _constrained(session, [{"role": "system", "content": instruction}, *messages], grammar, sampling)


def _arguments(session: Session, messages: list[dict], function: Function, sampling: SamplingParams) -> str:
    """Step 2: the call's arguments, JSON valid under the function's parameters by construction."""
    fields = ", ".join(function.parameters.get("properties") or {}) or "no fields"
    instruction = (
        f"Call the function {function.name}: {function.description}\n"
        # The grammar enforces the schema; the prompt only names the fields, to stay short.
        f"Reply with its arguments as a JSON object with: {fields}"
    )
    try:
        grammar = Grammar.json_schema(function.parameters, session.tokenizer, ARGUMENT_TOKENS)
    except InvalidRequestError as err:
        raise InvalidRequestError(
            f"tools: the parameters of {function.name!r} cannot be used: {err}"
        ) from None
    return _constrained(session, [*messages, {"role": "system", "content": instruction}], grammar, sampling)


def _constrained(session: Session, messages: list[dict], grammar: Grammar, sampling: SamplingParams) -> str:
    params = dataclasses.replace(
        sampling,
        max_tokens=grammar.max_tokens,
        logits_processors=(grammar.processor(),),
        stop=(),  # the grammar decides where the output ends
    )
    return session.chat(Call(messages, params.max_tokens, params=params)).text


def _answer(session: Session, messages: list[dict], sampling: SamplingParams) -> Decision:
    done = session.chat(Call(messages, sampling.max_tokens, params=sampling))
    return Decision(content=done.text, finish_reason=done.finish_reason or "stop")
