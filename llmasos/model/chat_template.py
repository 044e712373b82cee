"""Chat templates: turning a list of messages into the prompt text a model was trained on.

Models ship their prompt format as a Jinja template (`tokenizer.chat_template` in a GGUF,
`chat_template` in `tokenizer_config.json`). We render it the way transformers does, because the
templates are written against transformers' environment: a sandboxed, immutable Jinja environment
with `trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, a `tojson` filter that keeps
non-ASCII text as is, and the globals `raise_exception` and `strftime_now`.

A model without a template (a base model) gets a plain, documented fallback format instead::

    System: <system content>

    User: <user content>

    Assistant: <assistant content>

    Assistant:

(messages joined by a blank line; the final ``Assistant:`` only with ``add_generation_prompt``).

Tools. A template that renders tools itself (it reads ``tools`` and writes ``tool_call``s, as
Qwen2.5's does with ``<tool_call>`` and ``<tool_response>``) gets the OpenAI-style ``tools`` list and
the messages as they are: an assistant message's ``tool_calls`` (arguments as objects) and ``tool``
messages with their ``tool_call_id``. A template without a tool format (SmolLM2's, the plain fallback)
gets the documented tool fallback instead (`fold_tool_turns`): the functions are listed in a system
message, and each assistant turn of calls with the results that answer it becomes one system message
that states what was called and what it returned, so the model reads the results as context to answer
from, and sees no call syntax of its own to imitate::

    system: You can call these functions:
    - get_weather: The current weather in a city
    ...
    system: Information looked up for the user's request (answer from it, in your own words):
    - get_weather {"city": "Paris"}: {"temp": 18}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmasos.errors import InvalidRequestError, ModelFormatError

#: Roles a message may have; anything else is a caller error, not something to pass to a template.
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

#: How the tool fallback introduces results: as information to answer from, not as calls to discuss.
RESULTS_HEADING = "Information looked up for the user's request (answer from it, in your own words):"
_FALLBACK_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def validate_messages(messages: object) -> list[dict[str, Any]]:
    """Check that `messages` is a list of ``{"role": ..., "content": str}`` dicts; return it as a list.

    Raises InvalidRequestError naming the first offending message, so a client can fix its request.
    Extra keys (``name``, ``tool_call_id``, ...) are allowed and passed to the template unchanged.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        raise InvalidRequestError(
            "messages must be a list of {'role': ..., 'content': ...} objects, "
            f"got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidRequestError("messages must not be empty: send at least one message")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(
                f"messages[{index}] must be an object with 'role' and 'content', got {type(message).__name__}"
            )
        if "role" not in message:
            raise InvalidRequestError(f"messages[{index}] has no 'role'; use one of {', '.join(ROLES)}")
        role = message["role"]
        if role not in ROLES:
            raise InvalidRequestError(f"messages[{index}] has role {role!r}; use one of {', '.join(ROLES)}")
        if "content" not in message:
            raise InvalidRequestError(
                f"messages[{index}] has no 'content'; give the message text as a string"
            )
        content = message["content"]
        if not isinstance(content, str):
            raise InvalidRequestError(
                f"messages[{index}].content must be a string, got {type(content).__name__}"
            )
    return [dict(message) for message in messages]


def _raise_exception(message: str) -> NoReturn:
    # Templates call this to reject a conversation they cannot format (e.g. roles not alternating);
    # that is the caller's fault, so it surfaces as a 400, with the template's own words.
    raise InvalidRequestError(f"the model's chat template rejected the messages: {message}")


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own `tojson` escapes HTML characters and non-ASCII text; transformers replaces it with
    # plain json.dumps, and templates (tool definitions especially) are written against that output.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _rebuild_chat_template(source: str | None, bos_token: str, eos_token: str) -> ChatTemplate:
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)


class ChatTemplate:
    """A compiled chat template (or the plain fallback when `source` is None)."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template: jinja2.Template | None = None
        if source is not None:
            try:
                # Compiled once here: compiling costs milliseconds, rendering microseconds.
                self._template = _environment().from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise ModelFormatError(
                    f"the model's chat template is not valid Jinja (line {exc.lineno}: {exc.message}); "
                    "fix or remove the template in the model file"
                ) from exc

    def __reduce__(self) -> tuple:
        # Compiled templates do not pickle; a remote engine's tokenizer crosses to the head (cluster/).
        return (_rebuild_chat_template, (self.source, self.bos_token, self.eos_token))

    @property
    def is_model_template(self) -> bool:
        """True when the model supplied its own template, False for the plain fallback format."""
        return self._template is not None

    @property
    def has_tool_format(self) -> bool:
        """True when the template renders tools and tool calls itself (Qwen2.5's does)."""
        return self.source is not None and "tools" in self.source and "tool_call" in self.source

    def render(
        self,
        messages: object,
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """Validate `messages` and render them to prompt text (special tokens appear as text).

        `tools`: OpenAI-style tool definitions, rendered by the template's own tool format when it
        has one, or by the documented fallback (see the module docstring)."""
        checked = validate_messages(messages)
        if not self.has_tool_format:
            checked, tools = fold_tool_turns(checked, tools), None
        if self._template is None:
            return render_fallback(checked, add_generation_prompt=add_generation_prompt)
        try:
            return self._template.render(
                messages=checked,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=tools or None,
            )
        except InvalidRequestError:
            raise
        except jinja2.TemplateError as exc:
            # Templates index into messages freely; a message shape they do not expect shows up
            # here, and it is still the request that has to change.
            raise InvalidRequestError(
                f"the model's chat template could not format the messages: {exc}"
            ) from exc


def render_fallback(messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
    """The plain format used for models without a template (see the module docstring)."""
    parts = [f"{_FALLBACK_LABELS[m['role']]}: {m['content']}" for m in messages]
    if add_generation_prompt:
        parts.append("Assistant:")
    return "\n\n".join(parts)


def fold_tool_turns(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The tool fallback for templates without a tool format (see the module docstring): the tools
    as a system message after the first system one (or first), and every assistant turn of
    `tool_calls` with the `tool` messages after it as one system message of results (a `tool`
    message that answers no such turn is left as it is)."""
    out: list[dict[str, Any]] = []
    results: dict[str, Any] | None = None  # the results message being filled
    calls: dict[str, str] = {}  # tool_call_id (or its position) -> the call described, not yet answered
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = {c.get("id") or f"#{i}": _described_call(c) for i, c in enumerate(message["tool_calls"])}
            if message["content"]:
                out.append({"role": "assistant", "content": message["content"]})
            results = {"role": "system", "content": RESULTS_HEADING}
            out.append(results)
        elif message["role"] == "tool" and results is not None:
            called = _answered_call(calls, message)
            results["content"] += f"\n- {called}: {message['content']}"
        else:
            results = None
            out.append({k: v for k, v in message.items() if k not in ("tool_calls", "tool_call_id")})
    if tools:
        at = 1 if out and out[0]["role"] == "system" else 0
        out.insert(at, {"role": "system", "content": describe_tools(tools)})
    return out


def _answered_call(calls: dict[str, str], message: dict[str, Any]) -> str:
    """The call a tool message answers: by its tool_call_id, else (Ollama sends none) the next in order."""
    called = calls.pop(message.get("tool_call_id") or "", None)
    if called is None and calls:
        called = calls.pop(next(iter(calls)))
    return called or message.get("name") or "a function"


def describe_tools(tools: list[dict[str, Any]]) -> str:
    """OpenAI-style tool definitions as a plain list, for templates without a tool format."""
    lines = ["You can call these functions:"]
    for tool in tools:
        function = tool.get("function", tool)
        lines.append(f"- {function.get('name')}: {function.get('description') or 'no description'}")
    return "\n".join(lines)


def _described_call(call: dict[str, Any]) -> str:
    function = call.get("function", call)
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return f"{function.get('name')} {arguments}"
