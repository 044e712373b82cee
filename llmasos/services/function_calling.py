"""Function calling: the model decides which functions to call (or to answer in words), and its calls
are always valid. One program over the chat system call, shared by every interface that offers
OpenAI-style `tools` (the OpenAI and Ollama routes).

For each choice, constrained steps, each an ordinary chat process of the calling app, with the tools
rendered in the chat template's own tool format (or its documented fallback, model/chat_template.py):
1. which function to call, or none ("auto"): the output is constrained to exactly one of the
   function names (plus "answer" under "auto"); a named tool choice skips this step;
2. the arguments: JSON constrained to the function's `parameters` schema, so they always parse and
   validate — no retry loop, whatever the model (a 135M model included);
3. with parallel calls allowed, whether to make another call: one of the function names (the named
   one only, under a named choice) or "done"; then 2 again, up to MAX_PARALLEL_CALLS calls a turn.
When the model answers instead of calling, the answer is generated as in any chat completion.

Only the functions the app may use (capability `tool:NAME`) are offered, and a name the model
writes is called only if it was offered: what a conversation says (a tool's result, a document)
can never widen them (docs/THREAT_MODEL.md).

After a turn of calls and their results, "auto" no longer offers the functions already called since
the user's last message: a small model otherwise calls the same function again and again instead of
answering from its result. "required" and a named choice are the client's to decide, and are obeyed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from llmasos.engine.constrained import Grammar
from llmasos.engine.json_schema import check_schema
from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import InvalidRequestError, PermissionDeniedError
from llmasos.services.base import Call, Session

ANSWER = "answer"  # the "auto" option that means: reply in words, call nothing
DONE = "done"  # the option after a call that means: no more calls in this turn
ARGUMENT_TOKENS = 256  # the most tokens a call's arguments may take
#: Calls in one turn at most when parallel calls are allowed: each costs two constrained steps, and
#: requests that need more than a few at once are rare ("weather in Paris and Tokyo" needs two).
MAX_PARALLEL_CALLS = 4
CHOICES = ("auto", "required", "none")


@dataclass(frozen=True)
class Function:
    """A function the model may call: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_tool(self) -> dict:
        """The OpenAI-style tool definition, as chat templates take it."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class FunctionCall:
    """One call the model made: the function's name and its arguments as JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Decision:
    """One choice's outcome: the calls of its turn, or an answer in words."""

    calls: tuple[FunctionCall, ...] = ()
    content: str | None = None
    finish_reason: str = "tool_calls"

    @property
    def is_call(self) -> bool:
        return bool(self.calls)

    @property
    def name(self) -> str | None:
        """The first call's function (the only one unless parallel calls were allowed)."""
        return self.calls[0].name if self.calls else None

    @property
    def arguments(self) -> str | None:
        return self.calls[0].arguments if self.calls else None


@dataclass(frozen=True)
class ToolEvent:
    """What a streaming caller is told as it happens. `kind` is "text" (a piece of an answer),
    "call" (call number `call` of the choice begins; `text` is the function's name) or "arguments"
    (a piece of that call's arguments)."""

    choice: int
    kind: str
    text: str
    call: int = 0


OnEvent = Callable[[ToolEvent], None]


def check_functions(
    functions: list[Function], tool_choice: str | None, path: str = "tools[{}].function.parameters"
) -> None:
    """InvalidRequestError (naming `path` with the function's index, then where in its schema) unless
    every function's schema can be used and `tool_choice` ("auto" as None, "required", "none", or a
    name) is one of them. Checked before any model call, so that a request's validity never depends
    on what the model picks."""
    for index, function in enumerate(functions):
        check_schema(function.parameters, path.format(index))
    names = {f.name for f in functions}
    if tool_choice not in (None, *CHOICES) and tool_choice not in names:
        raise InvalidRequestError(f"tool_choice names {tool_choice!r}, which is not among the tools given")


def call_functions(
    session: Session,
    messages: list[dict],
    functions: list[Function],
    tool_choice: str | None,
    sampling: list[SamplingParams],
    *,
    parallel: bool = False,
    on_event: OnEvent | None = None,
) -> list[Decision]:
    """One decision per entry of `sampling` (a choice each). `tool_choice` is "auto" (None),
    "required", "none", or the name of the function to call; `parallel` allows several calls in a
    turn; `on_event` receives answer text and call pieces as they are generated."""
    check_functions(functions, tool_choice)
    functions = _usable(session, functions, tool_choice)
    turn = _Turn(session, messages, {f.name: f for f in functions}, tool_choice, parallel, on_event)
    return [turn.decide(index, params) for index, params in enumerate(sampling)]


@dataclass
class _Turn:
    """The request's side of every step: the conversation, the functions and the caller's choices."""

    session: Session
    messages: list[dict]
    functions: dict[str, Function]
    tool_choice: str | None
    parallel: bool
    on_event: OnEvent | None

    def decide(self, choice: int, sampling: SamplingParams) -> Decision:
        if self.tool_choice == "none":
            return self._answer(choice, sampling)
        name = self.tool_choice if self.tool_choice in self.functions else self._first(sampling)
        if name == self._option(ANSWER):
            return self._answer(choice, sampling)
        calls: list[FunctionCall] = []
        while name != self._option(DONE):
            index = len(calls)
            # The first call streams as it is generated; a later one once it is known not to repeat
            # an earlier call (a small model repeats the first; a repeat adds nothing, so it ends the turn).
            live = index == 0
            if live:
                self._emit(choice, "call", name, index)
            step = _step_sampling(sampling, 2 * index + 1)
            call = FunctionCall(name, self._arguments(choice, index, name, calls, step, live))
            if call in calls:
                break
            if not live:
                self._emit(choice, "call", name, index)
                self._emit(choice, "arguments", call.arguments, index)
            calls.append(call)
            if not self.parallel or len(calls) >= MAX_PARALLEL_CALLS:
                break
            name = self._next(calls, _step_sampling(sampling, 2 * len(calls)))
        return Decision(tuple(calls))

    def _offered(self, name: str, options: list[str]) -> str:
        """`name` if it is one of the `options` the model was offered; the grammar makes it so, and
        this check keeps it so whatever a model or a bug in the grammar produces: a name outside
        them is never called."""
        if name not in options:
            raise PermissionDeniedError(
                f"the model named {name[:80]!r}, which it was not offered; nothing was called"
            )
        return name

    def _option(self, word: str) -> str:
        """ANSWER or DONE as offered: in parentheses when a function has that name (names cannot)."""
        return f"({word})" if word in self.functions else word

    def _first(self, sampling: SamplingParams) -> str:
        """Step 1: the function the conversation needs (or ANSWER under "auto")."""
        required = self.tool_choice == "required"
        called = set() if required else _called_since_user(self.messages)
        options = [name for name in self.functions if name not in called]
        answer = self._option(ANSWER)
        if not required:
            if not options:
                return answer
            options.append(answer)
        instruction = "Reply with the name of the function that the user's last message needs" + (
            "." if required else f", or with {answer!r} to reply in words."
        )
        chosen = self._constrained(instruction, Grammar.choice(options, self.session.tokenizer), sampling)
        return self._offered(chosen, options)

    def _next(self, calls: list[FunctionCall], sampling: SamplingParams) -> str:
        """Step 3: another call the user's request needs, or DONE."""
        named = self.tool_choice in self.functions
        options = [self.tool_choice] if named else list(self.functions)
        instruction = (
            f"You are calling: {_listed(calls)}.\n"
            "If the user's request needs another call (for another item it names), reply with that "
            f"function's name; if these calls are all it needs, reply {self._option(DONE)!r}."
        )
        options = [*options, self._option(DONE)]
        grammar = Grammar.choice(options, self.session.tokenizer)
        return self._offered(self._constrained(instruction, grammar, sampling), options)

    def _arguments(
        self,
        choice: int,
        index: int,
        name: str,
        calls: list[FunctionCall],
        sampling: SamplingParams,
        live: bool,
    ) -> str:
        """Step 2: the call's arguments, JSON valid under the function's parameters by construction."""
        function = self.functions[name]
        fields = ", ".join(function.parameters.get("properties") or {}) or "no fields"
        earlier = (
            f"You already called: {_listed(calls)}.\nThis next call is for another item the user "
            "named: give it different arguments.\n"
            if calls
            else ""
        )
        instruction = (
            f"{earlier}Call the function {function.name}: {function.description}\n"
            # The grammar enforces the schema; the prompt only names the fields, to stay short.
            f"Reply with its arguments as a JSON object with: {fields}"
        )
        grammar = Grammar.json_schema(function.parameters, self.session.tokenizer, ARGUMENT_TOKENS)
        on_text = None
        if self.on_event is not None and live:

            def on_text(text: str) -> None:
                self._emit(choice, "arguments", text, index)

        return self._constrained(instruction, grammar, sampling, on_text)

    def _constrained(
        self,
        instruction: str,
        grammar: Grammar,
        sampling: SamplingParams,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        params = dataclasses.replace(
            sampling,
            max_tokens=grammar.max_tokens,
            logits_processors=(grammar.processor(),),
            stop=(),  # the grammar decides where the output ends
        )
        messages = [*self.messages, {"role": "system", "content": instruction}]
        tools = [f.as_tool() for f in self.functions.values()]
        call = Call(messages, params.max_tokens, params=params, tools=tools)
        if on_text is None:
            return self.session.chat(call).text
        return self.session.chat_streamed(call, on_text).text

    def _answer(self, choice: int, sampling: SamplingParams) -> Decision:
        # Without the tools: a template with a tool format would invite a call written as text.
        call = Call(self.messages, sampling.max_tokens, params=sampling)
        if self.on_event is None:
            done = self.session.chat(call)
        else:
            done = self.session.chat_streamed(call, lambda text: self._emit(choice, "text", text))
        return Decision(content=done.text, finish_reason=done.finish_reason or "stop")

    def _emit(self, choice: int, kind: str, text: str, call: int = 0) -> None:
        if self.on_event is not None:
            self.on_event(ToolEvent(choice, kind, text, call))


def _usable(session: Session, functions: list[Function], tool_choice: str | None) -> list[Function]:
    """The functions the app may have its model call (capability `tool:NAME`, decided by the chat
    system call): the others are never offered. A choice that needs one of them is refused."""
    usable = set(session.syscalls.usable_tools(session.app, [f.name for f in functions]))
    refused = [f.name for f in functions if f.name not in usable]
    if tool_choice in refused or (tool_choice == "required" and not usable):
        names = ", ".join(refused)
        raise PermissionDeniedError(
            f"app {session.app.name!r} may not use the tool(s) {names}; "
            f"an admin can grant tool:{refused[0]}, or offer tools the app may use"
        )
    return [f for f in functions if f.name in usable]


def _step_sampling(sampling: SamplingParams, step: int) -> SamplingParams:
    """A seeded request's params for its `step`-th constrained step: still reproducible, but with
    draws of their own (with one seed for every step, the same draws decided each of them alike)."""
    if sampling.seed is None:
        return sampling
    return dataclasses.replace(sampling, seed=sampling.seed ^ (step << 32))


def _called_since_user(messages: list[dict]) -> set[str]:
    """Names of the functions the assistant called after the user's last message."""
    called: set[str] = set()
    for message in reversed(messages):
        if message.get("role") == "user":
            break
        for call in message.get("tool_calls") or ():
            called.add(str(call.get("function", call).get("name")))
    return called


def _listed(calls: list[FunctionCall]) -> str:
    return "; ".join(f"{c.name} with {c.arguments}" for c in calls)
