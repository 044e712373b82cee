"""A workflow runner over system calls with no model, and functions whose calls the tests can count
and make fail: what the runner's durability and validation are tested with."""

from __future__ import annotations

import threading
from collections import Counter

from llmasos.programs import ProgramRegistry, load_plugins
from llmasos.security.apps import App
from llmasos.tools.base import ToolContext
from llmasos.workflows import RunStore, WorkflowRunner, function
from llmasos.workflows.functions import object_schema
from tests.helpers.programs import syscalls_without_models


class Calls:
    """How often each function ran (per input text), and failures to inject."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.fail_times: Counter[str] = Counter()  # name -> how many more calls raise
        self.gate: dict[str, threading.Event] = {}  # name -> its calls wait for this
        self.lock = threading.Lock()

    def enter(self, name: str) -> None:
        gate = self.gate.get(name)
        if gate is not None:
            gate.wait(10)
        with self.lock:
            self.counts[name] += 1
            if self.fail_times[name] > 0:
                self.fail_times[name] -= 1
                raise RuntimeError(f"{name} failed on purpose")


def register_test_functions(registry: ProgramRegistry, calls: Calls) -> None:
    @function(
        "upper",
        input_schema=object_schema(text={"type": "string"}),
        output_schema=object_schema(text={"type": "string"}),
    )
    def upper(args: dict, context: ToolContext) -> dict:
        calls.enter("upper")
        return {"text": args["text"].upper()}

    @function(
        "count_words",
        input_schema=object_schema(text={"type": "string"}),
        output_schema=object_schema(words={"type": "integer"}),
    )
    def count_words(args: dict, context: ToolContext) -> dict:
        calls.enter("count_words")
        return {"words": len(args["text"].split())}

    @function(
        "split",
        input_schema=object_schema(text={"type": "string"}),
        output_schema=object_schema(parts={"type": "array", "items": {"type": "string"}}),
    )
    def split(args: dict, context: ToolContext) -> dict:
        calls.enter("split")
        return {"parts": args["text"].split()}

    @function(
        "flaky",
        input_schema=object_schema(text={"type": "string"}),
        output_schema=object_schema(text={"type": "string"}),
    )
    def flaky(args: dict, context: ToolContext) -> dict:
        calls.enter("flaky")
        return {"text": args["text"]}

    @function(
        "big",
        input_schema=object_schema(size={"type": "integer"}),
        output_schema=object_schema(blob={"type": "string"}),
    )
    def big(args: dict, context: ToolContext) -> dict:
        calls.enter("big")
        return {"blob": "x" * args["size"]}

    for program in (upper, count_words, split, flaky, big):
        registry.register(program)


def registry_with_functions(calls: Calls) -> ProgramRegistry:
    registry = ProgramRegistry()
    load_plugins(registry)
    register_test_functions(registry, calls)
    return registry


def make_runner(calls: Calls, app_name: str = "flows", **app_fields) -> tuple[WorkflowRunner, App]:
    syscalls = syscalls_without_models()
    app = syscalls.apps.create(App(app_name, **app_fields))
    return WorkflowRunner(syscalls, RunStore(), registry_with_functions(calls)), app
