"""Function calling on /v1/chat/completions: the model decides, and its call is always valid.

Two constrained steps, each a process of the kernel like any generation:
1. which function to call, or none ("auto"): the output is constrained to exactly one of the
   function names (plus "answer" under "auto"); a named `tool_choice` skips this step;
2. the arguments: JSON constrained to the function's `parameters` schema, so they always parse and
   validate — no retry loop, whatever the model (a 135M model included).
When the model answers instead of calling, the answer is generated as in any chat completion.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from fastapi import Request

from llmasos.api.generation import Generation, sampling_params
from llmasos.api.schemas import ChatCompletionRequest, ChatMessage
from llmasos.engine.constrained import Grammar
from llmasos.errors import InvalidRequestError
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App

ANSWER = "answer"  # the "auto" option that means: reply in words, call nothing
ARGUMENT_TOKENS = 256  # the most tokens a call's arguments may take


@dataclass
class ToolDecision:
    """A choice's outcome: a call (name, arguments JSON) or None to answer in words."""

    name: str | None
    arguments: str | None
    usage: dict


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


def _fields(schema: dict) -> str:
    properties = schema.get("properties") or {}
    return ", ".join(properties) or "no fields"


def wants_tools(body: ChatCompletionRequest) -> bool:
    return bool(body.tools) and body.tool_choice != "none"


def _catalog(body: ChatCompletionRequest) -> str:
    return "\n".join(
        f"- {t.function.name}: {t.function.description or 'no description'}" for t in body.tools or ()
    )


async def _constrained(
    syscalls: Syscalls,
    app: App,
    body: ChatCompletionRequest,
    messages: list[dict],
    grammar: Grammar,
    i: int,
    request: Request,
) -> tuple[str, dict]:
    params = dataclasses.replace(
        sampling_params(body, i),
        max_tokens=grammar.max_tokens,
        logits_processors=(grammar.processor(),),
        stop=(),  # the grammar decides where the output ends
    )
    gen = await Generation.start(
        syscalls, app, 1, lambda _: syscalls.chat(app, body.model, messages, params, priority=body.priority)
    )
    await gen.wait(request)
    return "".join(gen.choices[0].text), gen.usage()


async def decide(
    syscalls: Syscalls,
    app: App,
    body: ChatCompletionRequest,
    messages: list[dict],
    choice: int,
    request: Request,
) -> ToolDecision:
    """Step 1 (which function, if any) and step 2 (its arguments) for one choice."""
    tools = {t.function.name: t.function for t in body.tools or ()}
    tokenizer = syscalls.tokenizer(app, body.model)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    def add(more: dict) -> None:
        for key in usage:
            usage[key] += more.get(key, 0)

    if body.tool_choice is not None and not isinstance(body.tool_choice, str):
        name = body.tool_choice.function.get("name", "")
        if name not in tools:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not among the tools given")
    else:
        options = list(tools) + ([] if body.tool_choice == "required" else [ANSWER])
        instruction = (
            "You can call these functions:\n"
            f"{_catalog(body)}\n"
            "Reply with the name of the function that the user's last message needs"
            + ("." if body.tool_choice == "required" else f", or with {ANSWER!r} to reply in words.")
        )
        name, more = await _constrained(
            syscalls,
            app,
            body,
            [{"role": "system", "content": instruction}, *messages],
            Grammar.choice(options, tokenizer),
            choice,
            request,
        )
        add(more)
        if name == ANSWER:
            return ToolDecision(None, None, usage)
    function = tools[name]
    instruction = (
        f"Call the function {name}: {function.description or ''}\n"
        # The grammar enforces the schema; the prompt only names the fields, to stay short.
        f"Reply with its arguments as a JSON object with: {_fields(function.parameters)}"
    )
    try:
        grammar = Grammar.json_schema(function.parameters, tokenizer, ARGUMENT_TOKENS)
    except InvalidRequestError as err:
        raise InvalidRequestError(f"tools: the parameters of {name!r} cannot be used: {err}") from None
    arguments, more = await _constrained(
        syscalls, app, body, [*messages, {"role": "system", "content": instruction}], grammar, choice, request
    )
    add(more)
    return ToolDecision(name, arguments, usage)


def tool_call_message(decision: ToolDecision) -> dict:
    """The assistant message of a call, in OpenAI's shape."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": decision.name, "arguments": decision.arguments},
            }
        ],
    }
