"""Memory tools: the model keeps a conversation's core block of facts itself (MemGPT's
`core_memory_append` / `core_memory_replace`), and the system executes what it calls.

Before answering a message in a conversation that offers them, the model decides through the
function-calling program (`function_calling.py`: constrained, so a call always parses) whether the
message holds a fact worth keeping. Each call is then executed by a system call of the app
(`append_core_memory` / `replace_core_memory`: the app's own conversation only, an audit row each)
and only if the app may use the tool (capability `tool:core_memory_append` /
`tool:core_memory_replace`; a tool the app may not use is never offered). What was called is
returned, for the response's output items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import InvalidRequestError
from llmasos.services.base import Session
from llmasos.services.function_calling import Function, call_functions

APPEND = Function(
    "core_memory_append",
    "Keep a new fact about the user or the task (a name, a preference, a date, a decision) that "
    "should be remembered for the rest of the conversation.",
    {
        "type": "object",
        "properties": {"fact": {"type": "string", "minLength": 1, "maxLength": 300}},
        "required": ["fact"],
        "additionalProperties": False,
    },
)
REPLACE = Function(
    "core_memory_replace",
    "Correct a fact kept earlier: give the old fact word for word and the new one (empty to forget it).",
    {
        "type": "object",
        "properties": {
            "old": {"type": "string", "minLength": 1, "maxLength": 300},
            "new": {"type": "string", "maxLength": 300},
        },
        "required": ["old", "new"],
        "additionalProperties": False,
    },
)
FUNCTIONS = (APPEND, REPLACE)
NAMES = tuple(f.name for f in FUNCTIONS)


@dataclass(frozen=True)
class MemoryCall:
    """One memory tool the model called and the system executed."""

    name: str
    arguments: str
    core: list[str] | None  # the core block after it; None when it failed
    error: str | None = None  # why it failed (e.g. replacing a fact that is not there)

    def output_item(self, item_id: str) -> dict:
        """The response's output item (LLMasOS's type: executed by the system, not by the client)."""
        return {
            "id": item_id,
            "type": "memory_call",
            "name": self.name,
            "arguments": self.arguments,
            "status": "failed" if self.error else "completed",
            **({"error": self.error} if self.error else {}),
        }


def keep_facts(
    syscalls: Any,
    app: Any,
    model: str,
    conversation_id: str,
    messages: list[dict],
    sampling: SamplingParams,
    priority: str | None = None,
) -> list[MemoryCall]:
    """Let the model call the memory tools on `messages` (the assembled context of the new message)
    and execute its calls; [] when it answers instead, or the app may use none of them."""
    session = Session(syscalls, app, model, priority=priority)
    if not syscalls.usable_tools(app, list(NAMES)):
        return []
    (decision,) = call_functions(session, messages, list(FUNCTIONS), None, [sampling], parallel=True)
    return [_execute(syscalls, app, conversation_id, c.name, c.arguments) for c in decision.calls]


def _execute(syscalls: Any, app: Any, conversation_id: str, name: str, arguments: str) -> MemoryCall:
    """Run one call; a call that cannot be done (its arguments are not JSON, the fact to replace is
    not there, the block is full) is reported as failed and changes nothing: the answer goes on."""
    try:
        args = json.loads(arguments)
        if not isinstance(args, dict):
            raise InvalidRequestError(f"the arguments of {name} are not a JSON object")
        if name == APPEND.name:
            core = syscalls.append_core_memory(app, conversation_id, str(args["fact"]))
        else:
            core = syscalls.replace_core_memory(
                app, conversation_id, str(args["old"]), str(args.get("new", ""))
            )
    except (ValueError, KeyError) as err:
        return MemoryCall(name, arguments, None, f"the arguments of {name} are not valid: {err}")
    except InvalidRequestError as err:
        return MemoryCall(name, arguments, None, err.message)
    return MemoryCall(name, arguments, core)
