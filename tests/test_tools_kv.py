"""The `kv` tool: the app's key-value store as a tool, whose writes honour the idempotency key a
workflow step's attempt carries (issue 25: a step re-run after a crash writes once)."""

from __future__ import annotations

import pytest

from llmasos.data import kv as kv_api
from llmasos.data.app_data import app_data
from llmasos.errors import DataNotFoundError, PermissionDeniedError
from llmasos.security.apps import App
from llmasos.tools.builtin import builtin_tools
from llmasos.tools.registry import ToolContext, ToolRegistry
from llmasos.workflows import RunStore, WorkflowRunner, parse
from llmasos.workflows.store import WHOLE
from tests.helpers.programs import syscalls_without_models
from tests.helpers.workflows import Calls, make_runner


@pytest.fixture
def registry(llmasos_home) -> ToolRegistry:
    return ToolRegistry(builtin_tools())


def kv(registry: ToolRegistry, app: App, idempotency_key: str = "", **args) -> dict:
    return registry.call("kv", args, ToolContext(app, idempotency_key=idempotency_key)).output


def test_set_get_list_delete_are_private_to_the_app(registry) -> None:
    mine, theirs = App("mine"), App("theirs")
    assert kv(registry, mine, operation="set", key="colour", value={"rgb": [1, 2, 3]})["value"] == {
        "rgb": [1, 2, 3]
    }
    assert kv(registry, mine, operation="get", key="colour")["value"] == {"rgb": [1, 2, 3]}
    assert kv(registry, mine, operation="list", prefix="col")["keys"] == ["colour"]
    assert kv(registry, theirs, operation="list")["keys"] == []
    with pytest.raises(DataNotFoundError):
        kv(registry, theirs, operation="get", key="colour")
    assert kv(registry, mine, operation="delete", key="colour")["deleted"]
    with pytest.raises(DataNotFoundError):  # without a key, a second delete finds nothing
        kv(registry, mine, operation="delete", key="colour")


def test_a_write_sent_again_under_its_idempotency_key_writes_once_and_answers_the_same(registry) -> None:
    app = App("flows")
    first = kv(registry, app, "run1:save:-1:1", operation="set", key="n", value=1)
    again = kv(registry, app, "run1:save:-1:1", operation="set", key="n", value=2)
    assert again == first and kv(registry, app, operation="get", key="n")["value"] == 1
    assert kv(registry, app, "run1:drop:-1:1", operation="delete", key="n")["deleted"]
    # The first attempt deleted it; the re-run answers as it did instead of "no key".
    assert kv(registry, app, "run1:drop:-1:1", operation="delete", key="n")["deleted"]
    kv(registry, app, "run1:save:-1:2", operation="set", key="n", value=3)  # a new attempt is a new write
    assert kv_api.kv_get(app_data(app.identity), "n")["value"] == 3


def test_the_app_needs_the_kv_capability(registry) -> None:
    syscalls = syscalls_without_models()
    narrow = syscalls.apps.create(App("narrow", capabilities=("tool:calculator",)))
    with pytest.raises(PermissionDeniedError, match="tool:kv"):
        registry.run(syscalls, narrow, "kv", {"operation": "list"}, kind="tool")


def test_a_delete_step_re_run_after_a_crash_succeeds_and_deletes_once(llmasos_home) -> None:
    """The server died after the step's delete was applied, before its result was committed: the
    resumed run calls it again under the same attempt (same key) and must not fail on "no key"."""
    runner, app = make_runner(Calls(), capabilities=("tool:*", "function:*"))
    spec = parse(
        {
            "name": "tidy",
            "steps": {
                "drop": {"kind": "tool", "name": "kv", "input": {"operation": "delete", "key": "draft"}}
            },
            "output": "{{ steps.drop.output.deleted }}",
        }
    )
    kv_api.kv_set(app_data(app.identity), "draft", "text")
    run_id = runner.store.create_run(app, spec, {})
    attempt = runner.store.start_attempt(run_id, "drop", WHOLE)
    runner.store.set_status(run_id, "running")
    before_crash = ToolContext(app, idempotency_key=f"{run_id}:drop:{WHOLE}:{attempt}")
    assert ToolRegistry(builtin_tools()).call("kv", {"operation": "delete", "key": "draft"}, before_crash)

    fresh = WorkflowRunner(runner.syscalls, RunStore(), runner.registry)
    assert fresh.resume_unfinished() == [run_id]
    done = fresh.wait(run_id, 10)
    fresh.close()
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] is True


def test_the_tool_writes_through_the_kv_system_calls_pseudonymized_and_audited(llmasos_home) -> None:
    """The tool once wrote the store directly: the value was kept as sent, whatever the app's privacy
    policy, and only a `tool.kv` row was written, not the `kv.set` row that /os/kv and the SDK get."""
    syscalls = syscalls_without_models()
    app = syscalls.apps.create(App("private", pii="pseudonymize"))
    value = {"note": "write to alice.smith@example.com", "n": 1}
    registry = ToolRegistry(builtin_tools())
    written = registry.run(
        syscalls, app, "kv", {"operation": "set", "key": "contact", "value": value}, kind="tool"
    )
    assert written.output["value"] == value  # the app sees its own value back
    stored = kv_api.kv_get(app_data(app.identity), "contact")["value"]
    assert "alice.smith@example.com" not in stored["note"] and stored["n"] == 1  # a placeholder on disk
    read = registry.run(syscalls, app, "kv", {"operation": "get", "key": "contact"}, kind="tool")
    assert read.output["value"] == value and syscalls.kv_get(app, "contact")["value"] == value
    registry.run(syscalls, app, "kv", {"operation": "delete", "key": "contact"}, kind="tool")
    calls = [row["call"] for row in reversed(syscalls.audit.query(app="private"))]
    # Each tool call's row is written when it ends, after the row of the system call it made.
    assert calls == ["kv.set", "tool.kv", "kv.get", "tool.kv", "kv.get", "kv.delete", "tool.kv"], calls
    # In-process with the kernel in the context (as /os/ask runs tools): the same system call.
    registry.call(
        "kv",
        {"operation": "set", "key": "k", "value": "bob@example.org"},
        ToolContext(app, syscalls=syscalls),
    )
    assert "bob@example.org" not in kv_api.kv_get(app_data(app.identity), "k")["value"]
    assert syscalls.audit.query(app="private", limit=1)[0]["call"] == "kv.set"
