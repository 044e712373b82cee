"""The canary test through the remaining paths: conversations (`/v1/conversations` items and core
memory, `/v1/responses` in a conversation and chained by `previous_response_id`, a running summary),
a workflow with tool, chat and service steps, and tool calling (a tool call's arguments and a tool's
result sent back). An app that pseudonymizes: no value in any file under LLMASOS_HOME, the logs,
/metrics or the engine's input; every value back in what the app reads; and after a restart (a new
kernel over the same home) the stored conversation still reads restored, from the vault kept sealed
in the app's database."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from llmasos.data.pages import PageRequest
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security import master_key
from llmasos.security.apps import AppRegistry
from tests.api.test_privacy_http import (
    CANARY_PEOPLE,
    Person,
    Server,
    _files_under,
    _server_log,
    _values_found,
    server,  # noqa: F401 (the fixture)
    synthetic_people,
)
from tests.helpers.echo_engine import EchoEngine

LONG = 1 << 16  # output tokens: the echo engine answers with its whole prompt


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def _said(group: list[Person]) -> str:
    return " ".join(p.sentence() for p in group)


def _all_in(group: list[Person], text: str) -> bool:
    return all(value in text for person in group for value in person.values)


def test_canaries_through_conversations_workflows_and_tool_calls(
    server: Server,  # noqa: F811
    llmasos_home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # 2 per path in the default run (14 people); LLMASOS_CANARY_PEOPLE=1000 sends 994 over the 7 paths
    per_message = max(2, CANARY_PEOPLE // 7) if CANARY_PEOPLE > 24 else 2
    people = synthetic_people(7 * per_message, seed=41)
    g = [people[i : i + per_message] for i in range(0, len(people), per_message)]
    key = server.new_app("canary", pii="pseudonymize", audit_content=True)
    client = server.openai(key)
    app = server.syscalls.apps.get("canary")

    # Conversations: items and core memory stored, a response in it, another chained to that one.
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": _said(g[0])}],
        extra_body={"core_memory": [g[1][0].sentence()]},
    )
    client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": _said(g[1][1:])}]
    )
    first = client.responses.create(
        model="echo", input=_said(g[2]), conversation=conversation.id, max_output_tokens=LONG
    )
    assert _all_in(g[0] + g[1] + g[2], first.output_text)  # the whole context came back restored
    chained = client.responses.create(
        model="echo", input=_said(g[3]), previous_response_id=first.id, max_output_tokens=LONG
    )
    assert _all_in(g[2] + g[3], chained.output_text)
    # A running summary, written as the background summarizer writes it, then read into a context.
    items = server.syscalls.conversation_items_after(app, conversation.id, 0)
    assert not any(v in item.text for item in items for p in g[0] for v in p.values)  # placeholders
    summary = f"So far: {_said(g[4])}"
    assert server.syscalls.set_conversation_summary(app, conversation.id, summary, items[1].seq, 0)
    summed = client.responses.create(
        model="echo", input="And then?", conversation=conversation.id, max_output_tokens=LONG
    )
    assert _all_in(g[4], summed.output_text)

    listed = client.conversations.items.list(conversation.id, order="asc", limit=100)
    texts = " ".join(part.text for item in listed.data for part in item.content)
    assert _all_in(g[0] + g[1][1:] + g[2], texts)
    assert client.conversations.retrieve(conversation.id).model_extra["core_memory"] == [g[1][0].sentence()]
    assert _all_in(g[2], json.dumps(client.responses.retrieve(first.id).model_dump(), ensure_ascii=False))

    # A workflow: the kv tool keeps the text, a chat step and a service (chat) read it.
    spec = {
        "name": "canary-flow",
        "inputs": {"text": {"type": "string"}},
        "steps": {
            "keep": {
                "kind": "tool",
                "name": "kv",
                "input": {"operation": "set", "key": "last", "value": "{{ inputs.text }}"},
            },
            "say": {
                "kind": "chat",
                "model": "echo",
                "max_tokens": 32768,
                "prompt": "Repeat {{ inputs.text }}",
            },
            "reply": {
                "kind": "service",
                "name": "chat",
                "input": "{{ inputs.text }}",
                "params": {"max_tokens": 32768},
            },
        },
        "output": {"said": "{{ steps.say.output }}", "replied": "{{ steps.reply.output }}"},
    }
    run = server.http.post(
        "/os/workflows/runs",
        json={"spec": spec, "inputs": {"text": _said(g[5])}, "wait": True, "timeout_s": 60},
        headers=server.auth(key),
    )
    assert run.status_code == 201, run.text
    assert run.json()["status"] == "succeeded", (
        run.json().get("error"),
        [(s["step"], s.get("error")) for s in run.json()["steps"]],
    )
    assert _all_in(g[5], run.json()["output"]["said"]) and _all_in(g[5], run.json()["output"]["replied"])
    assert server.http.get("/os/kv/last", headers=server.auth(key)).json()["value"] == _said(g[5])

    # Tool calling: the model's call (its arguments) and the tool's result go back to the model.
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}
    call["function"]["arguments"] = json.dumps({"email": g[6][0].email})
    reply = client.chat.completions.create(
        model="echo",
        max_tokens=LONG,
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        messages=[
            # (A bare "Look up <name>" is a miss of the detector's: benchmarks/pii_detection.py
            # measures its recall; the paths are what this test checks.)
            {"role": "user", "content": f"{g[6][0].sentence()} Look me up."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": _said(g[6])},
        ],
    )
    assert _all_in(g[6], reply.choices[0].message.content)

    metrics = server.http.get("/metrics", headers=server.auth(server.admin_key)).text
    server.syscalls.audit.close()  # flushed: what it wrote is on disk for the scan below
    sent = [p for group in g[:7] for p in group]
    leaks = _values_found(
        [v for person in sent for v in person.values],
        {
            "the engine's input": "\n".join(server.engine.prompts),
            "/metrics": metrics,
            "the server's logs": _server_log(caplog.records),
            **_files_under(llmasos_home),
        },
    )
    assert leaks == {}, json.dumps(leaks)

    # A restart: a new kernel over the same home restores the stored conversation's placeholders.
    engine = EchoEngine()
    kernel = Kernel(ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1), KernelConfig())
    restarted = Syscalls(kernel, AppRegistry(), interface="http")
    again = restarted.list_conversation_items(app, conversation.id, PageRequest(limit=100, order="asc"))
    assert _all_in(g[0] + g[1][1:] + g[2], json.dumps(again, ensure_ascii=False))
    assert restarted.get_conversation(app, conversation.id)["core_memory"] == [g[1][0].sentence()]


def test_a_blocking_policy_refuses_conversation_items_and_keeps_nothing(server: Server) -> None:  # noqa: F811
    key = server.new_app("strict-memory", pii={"documents": "block"})
    person = synthetic_people(1, seed=8)[0]
    item = {"type": "message", "role": "user", "content": person.sentence()}
    refused = server.http.post("/v1/conversations", json={"items": [item]}, headers=server.auth(key))
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "personal_data_blocked"
    assert "EMAIL_ADDRESS" in refused.json()["error"]["message"]
    assert not any(v in refused.text for v in person.values)
    usage = server.http.get("/os/apps/strict-memory/data", headers=server.auth(key)).json()
    assert usage["conversations"] == 0 and usage["conversation_items"] == 0


def test_a_blocking_policy_refuses_a_response_input_before_the_model_runs(server: Server) -> None:  # noqa: F811
    key = server.new_app("strict-answers", pii={"documents": "block"})
    person = synthetic_people(1, seed=9)[0]
    prompts_before = len(server.engine.prompts)
    refused = server.http.post(
        "/v1/responses",
        json={"model": "default", "input": person.sentence(), "max_output_tokens": 8},
        headers=server.auth(key),
    )
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "personal_data_blocked"
    assert not any(v in refused.text for v in person.values)
    assert len(server.engine.prompts) == prompts_before  # the model never ran
    usage = server.http.get("/os/apps/strict-answers/data", headers=server.auth(key)).json()
    assert usage["conversation_items"] == 0
