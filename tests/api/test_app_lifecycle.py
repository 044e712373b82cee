"""Removing an app or revoking its keys ends its live processes at once, and a new app created with a
removed app's name inherits nothing of it: processes, knowledge triples, prefix cache (issue 20, item 7)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from llmasos.security.admin import ADMIN_APP
from llmasos.security.apps import App
from llmasos.tools.knowledge import KnowledgeGraph

#: Longer than the kernel's unread-output bound (512 tokens, backpressure): the stream cannot end before
#: its client has read a good part of it, so it is still running when the test acts after the first
#: text. At 200 tokens, on the default tiny server, the faster kernels of 2026-12-07 finished it
#: before the client had read its first text (CI failed "assert not True").
STREAM = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "go on"}],
    "max_tokens": 900,
    "stream": True,
    "temperature": 1.0,
}


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _end_while_streaming(tiny_server, key: str, end: Callable[[], object]) -> tuple[int, list[dict]]:
    """Stream a chat for `key`'s app, call `end` after the first text, and return the pid and
    every chunk the client received afterwards."""
    syscalls = tiny_server.syscalls
    headers = {"Authorization": f"Bearer {key}"}
    after = []
    with httpx.stream("POST", tiny_server.url + "/v1/chat/completions", json=STREAM, headers=headers) as r:
        pid = int(r.headers["x-llmasos-pids"])
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                break
        with syscalls.kernel.lock:  # the kernel cannot finish it meanwhile: this is mid-stream
            assert not syscalls.kernel.table[pid].is_terminal
            end()
        after = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    return pid, after


@pytest.mark.parametrize("how", ["remove", "revoke"])
def test_removing_an_app_or_revoking_its_keys_ends_its_stream_with_an_error_and_frees_kv(
    long_tiny_server, how
):
    tiny_server = long_tiny_server  # a 1,024-token window: room for STREAM's 900 tokens
    syscalls = tiny_server.syscalls
    admin = syscalls.apps.get(ADMIN_APP)
    key = tiny_server.new_app("doomed")
    end = {
        "remove": lambda: syscalls.remove_app(admin, "doomed"),
        "revoke": lambda: syscalls.revoke_keys(admin, "doomed"),
    }[how]
    pid, after = _end_while_streaming(tiny_server, key, end)
    errors = [c["error"] for c in after if "error" in c]
    assert len(errors) == 1 and errors[0]["type"] == "authentication_error"
    assert ("was removed" if how == "remove" else "were revoked") in errors[0]["message"]
    assert after[-1]["choices"][0]["finish_reason"] == "cancelled"
    process = syscalls.kernel.table[pid]
    assert process.state.value == "cancelled" and process.tokens_out < STREAM["max_tokens"]
    engine = tiny_server.engine()
    assert _wait_for(lambda: str(pid) not in engine.requests)
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks
    assert (
        httpx.get(tiny_server.url + "/os/ps", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    )


def test_revoking_an_apps_keys_over_http_ends_its_streams(long_tiny_server):
    """DELETE /os/apps/{name}/keys (what `llmasos apps revoke` calls when a server runs) revokes the
    keys and cancels the app's live stream at once."""
    tiny_server = long_tiny_server  # a 1,024-token window: room for STREAM's 900 tokens
    key = tiny_server.new_app("revoked")
    answers: list[httpx.Response] = []
    revoker = threading.Thread(
        target=lambda: answers.append(tiny_server.client().delete("/os/apps/revoked/keys"))
    )
    # Started under the kernel's lock, mid-stream: the request is served once the lock is let go.
    pid, after = _end_while_streaming(tiny_server, key, revoker.start)
    revoker.join(timeout=30)
    assert answers[0].status_code == 200 and answers[0].json() == {"app": "revoked", "revoked": 1}
    (error,) = [c["error"] for c in after if "error" in c]
    assert error["type"] == "authentication_error" and "were revoked" in error["message"]
    assert after[-1]["choices"][0]["finish_reason"] == "cancelled"
    assert tiny_server.syscalls.kernel.table[pid].state.value == "cancelled"
    assert tiny_server.client().delete("/os/apps/admin/keys").status_code == 400  # never its own


def test_a_new_app_with_a_removed_apps_name_sees_none_of_its_state(tiny_server, llmasos_home):
    """The reproduction: `notes` stores a fact and runs a process, is removed, and a new `notes` is
    created. The new one must not read the old triples nor see the old process."""
    syscalls = tiny_server.syscalls
    admin = syscalls.apps.get(ADMIN_APP)
    old, old_key = syscalls.create_app(admin, App("notes"))
    graph = KnowledgeGraph(llmasos_home / "knowledge.db")
    assert graph.add(old, "Ada", "lives in", "London")
    client = tiny_server.client(old_key)
    pid = int(
        client.post("/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 2}).headers[
            "x-llmasos-pids"
        ]
    )
    assert [p["pid"] for p in client.get("/os/ps").json()["processes"]] == [pid]

    syscalls.remove_app(admin, "notes")
    new, new_key = syscalls.create_app(admin, App("notes"))

    assert new.id and new.id != old.id
    assert graph.query(new) == [] and graph.count(new) == 0
    from llmasos.tools.builtin import builtin_tools
    from llmasos.tools.registry import ToolContext, ToolRegistry

    tools = ToolRegistry(builtin_tools())
    ask = {"operation": "query", "entity": "Ada"}
    assert tools.call("knowledge", ask, ToolContext(new)).output["triples"] == []  # through the tool
    assert len(tools.call("knowledge", ask, ToolContext(old)).output["triples"]) == 1
    assert tiny_server.client(new_key).get("/os/ps").json()["processes"] == []
    assert tiny_server.client(new_key).get(f"/os/tasks/{pid}").status_code == 404
    assert new.cache_namespace != old.cache_namespace
    assert graph.query(old)[0]["object"] == "London"  # still the old identity's, reachable by none


def test_name_keyed_triples_from_before_ids_go_to_the_app_that_wrote_them(tiny_server, llmasos_home):
    """Migration: rows keyed by name are taken over by the app of that name that existed when they
    were written; an app created after them (a namesake of a removed one) gets none."""
    import sqlite3

    graph = KnowledgeGraph(llmasos_home / "knowledge.db")
    syscalls = tiny_server.syscalls
    admin = syscalls.apps.get(ADMIN_APP)
    keeper, _ = syscalls.create_app(admin, App("keeper"))
    conn = sqlite3.connect(llmasos_home / "knowledge.db")
    for app, when in (("keeper", keeper.created_at + 1), ("late", 1.0)):
        conn.execute(
            "INSERT INTO triples (app, subject, relation, object, created_at, legacy) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            (app, "x", "is", app, when),
        )
    conn.commit()
    conn.close()
    late, _ = syscalls.create_app(admin, App("late"))
    assert [t["object"] for t in graph.query(keeper)] == ["keeper"]
    assert graph.query(late) == []


@pytest.mark.parametrize("name", ["anonymous", "admin"])
def test_reserved_app_names_are_refused_everywhere(tiny_server, name):
    r = tiny_server.client().post("/os/apps", json={"name": name})
    assert r.status_code == 400 and "reserved" in r.json()["error"]["message"]


def test_a_generation_admitted_as_its_app_is_removed_is_cancelled(tiny_server):
    """The race's other order: the removal ran between authentication and admission."""
    from llmasos.engine.sampling import SamplingParams

    syscalls = tiny_server.syscalls
    admin = syscalls.apps.get(ADMIN_APP)
    racer, _ = syscalls.create_app(admin, App("racer"))
    syscalls.remove_app(admin, "racer")
    with syscalls.kernel.lock:  # the kernel cannot run it to its end before the check
        process = syscalls.generate(racer, "tiny", "a", SamplingParams(max_tokens=5))
        assert process.state.value == "cancelled"
    final = list(syscalls.events(racer, process.pid, timeout=30))[-1]
    assert final.finished and "was removed" in final.error.message
