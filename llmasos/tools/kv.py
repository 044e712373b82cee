"""The `kv` tool: the calling app's key-value store (the one `/os/kv` serves) as a tool, so workflow
steps and function calls can keep small state.

Writes honour the call's idempotency key (a workflow step's run, step, item and attempt): a step
re-run after a crash sets or deletes once, and a re-run delete answers as the first did rather than
failing on a key that the first attempt already removed.

Called through the kernel (`Invocation.syscalls`), each operation is the kv system call itself, so a
program's write is pseudonymized and audited as one through `/os/kv` is.
"""

from __future__ import annotations

from typing import ClassVar

from llmasos.data import kv as kv_api
from llmasos.data.app_data import app_data
from llmasos.errors import InvalidRequestError
from llmasos.programs.base import SideEffect
from llmasos.tools.base import Tool, ToolContext, ToolResult

_KEY = {"type": "string", "minLength": 1, "maxLength": kv_api.MAX_KEY_CHARS}


class KvTool(Tool):
    name = "kv"
    description = (
        "Keep small JSON values under string keys, private to the calling app: set a key (optionally "
        "with a time to live), get it, delete it, or list keys by prefix."
    )
    examples: ClassVar[tuple[str, ...]] = (
        "Store the value 42 under the key counter",
        "Set the key theme to dark",
        "What value is stored under the key theme?",
        "Delete the key session_token",
        "List my stored keys that start with user_",
    )

    @property
    def side_effects(self) -> frozenset[SideEffect]:
        return frozenset({SideEffect.APP_DATA})

    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "operation": {"enum": ["set", "get", "delete", "list"], "description": "what to do"},
            "key": {**_KEY, "description": "set/get/delete: the key"},
            "value": {"description": "set: any JSON value"},
            "ttl_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "set: seconds until it expires",
            },
            "prefix": {"type": "string", "default": "", "description": "list: keys that start with this"},
            "limit": {"type": "integer", "minimum": 1, "maximum": kv_api.MAX_LIST, "default": 100},
        },
        "required": ["operation"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "operation": {"enum": ["set", "get", "delete", "list"]},
            "key": {"type": "string"},
            "value": {},
            "expires_at": {"type": ["number", "null"]},
            "deleted": {"type": "boolean"},
            "keys": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["operation"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        operation = args["operation"]
        if operation != "list" and "key" not in args:
            raise InvalidRequestError(f"kv {operation} needs a key")
        if operation == "set" and "value" not in args:
            raise InvalidRequestError("kv set needs a value (any JSON value)")
        answer = (_direct if context.syscalls is None else _system_call)(operation, args, context)
        if operation == "list":
            return ToolResult(self.name, {"operation": operation, "keys": [k["key"] for k in answer["data"]]})
        return ToolResult(self.name, {"operation": operation, **answer})


def _system_call(operation: str, args: dict, context: ToolContext) -> dict:
    """Through the kernel's kv system calls, as /os/kv and the SDK: the app's privacy policy applies
    to the value and each operation writes its own audit row (`kv.set`, ...)."""
    syscalls, app, idempotency_key = context.syscalls, context.app, context.idempotency_key
    if operation == "list":
        return syscalls.kv_list(app, args["prefix"], args["limit"])
    if operation == "get":
        return syscalls.kv_get(app, args["key"])
    if operation == "delete":
        return syscalls.kv_delete(app, args["key"], idempotency_key=idempotency_key)
    return syscalls.kv_set(
        app, args["key"], args["value"], args.get("ttl_s"), idempotency_key=idempotency_key
    )


def _direct(operation: str, args: dict, context: ToolContext) -> dict:
    """The store itself, for in-process callers that hold no kernel (`ProgramRegistry.call`: scripts
    and tests); no privacy policy or audit row applies there."""
    data, idempotency_key = app_data(context.app.identity), context.idempotency_key
    if operation == "list":
        return kv_api.kv_list(data, args["prefix"], args["limit"])
    if operation == "get":
        return kv_api.kv_get(data, args["key"])
    if operation == "delete":
        return kv_api.kv_delete(data, args["key"], idempotency_key=idempotency_key)
    return kv_api.kv_set(data, args["key"], args["value"], args.get("ttl_s"), idempotency_key=idempotency_key)
