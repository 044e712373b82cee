"""Memory tools: a model offered `core_memory_append` / `core_memory_replace` in a conversation keeps
its core facts, the system executes each call (audited, the app's own conversation only, only with
the app's capability), and the next answer's context holds the fact. The model is scripted: it
calls the tools when the user states a fact, and answers from the core block otherwise."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from llmasos.api.app import create_app
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.model.loader import load_model
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog
from llmasos.services import responses as flow
from tests.helpers.obedient_engine import ObedientEngine
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

CHOOSE = "Reply with the name of the function that the user's last message needs"
ANOTHER = "If the user's request needs another call"


class MemoryKeepingEngine(ObedientEngine):
    """Calls core_memory_append with what follows "Remember:" in the user's last message, or
    core_memory_replace for "Correct: OLD => NEW"; otherwise answers with the facts it was given.
    It reads its prompts with the tiny model's real tokenizer (the grammars of function calling are
    built over a real vocabulary) and ignores them, as a model that obeys its script would."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def add(self, request_id, prompt, params=None, *, cache_namespace="default") -> None:
        super().add(request_id, prompt, params, cache_namespace=cache_namespace)
        text = prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt)
        self._answers[request_id] = self._script(text)

    @staticmethod
    def _script(text: str) -> str:
        last_user = text.rsplit("user\n", 1)[-1].split("\n", 1)[0]
        if CHOOSE in text:
            if "Remember:" in last_user:
                return "core_memory_append"
            return "core_memory_replace" if "Correct:" in last_user else "answer"
        if ANOTHER in text:
            return "done"
        if "Call the function core_memory_append" in text:
            fact = last_user.split("Remember:", 1)[1].strip()
            return json.dumps({"fact": fact})
        if "Call the function core_memory_replace" in text:
            old, new = last_user.split("Correct:", 1)[1].split("=>")
            return json.dumps({"old": old.strip(), "new": new.strip()})
        if "Facts to keep in mind:\n" not in text:
            return "no facts"
        lines = text.split("Facts to keep in mind:\n", 1)[1].split("\n")
        return "\n".join(itertools.takewhile(lambda line: line.startswith("- "), lines))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    path, _ = write_tiny_gguf(tmp_path_factory.mktemp("tiny-memory") / "tiny.gguf", TinySpec(context=2048))
    return load_model(path).tokenizer


@pytest.fixture
def kernel(tokenizer) -> Iterator[Syscalls]:
    engine = MemoryKeepingEngine(tokenizer)
    kernel = Kernel(ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1), KernelConfig())
    syscalls = Syscalls(kernel, AppRegistry(), audit=AuditLog())
    kernel.start()
    yield syscalls
    kernel.stop()


def _respond(syscalls: Syscalls, app: App, text: str, conversation: str) -> dict:
    request = flow.ResponseRequest(
        model="m", input=text, conversation=conversation, memory_tools=True, max_output_tokens=64
    )
    return flow.respond(syscalls, app, request)[0]


def test_the_model_keeps_and_corrects_facts_that_the_next_answer_uses(kernel: Syscalls) -> None:
    app = kernel.apps.create(App("notes"))
    conversation = kernel.create_conversation(app)["id"]
    kept = _respond(kernel, app, "Remember: The user is called Ada.", conversation)
    call = kept["output"][0]
    assert call["type"] == "memory_call" and call["name"] == "core_memory_append"
    assert call["status"] == "completed"
    assert kernel.get_conversation(app, conversation)["core_memory"] == ["The user is called Ada."]
    assert "- The user is called Ada." in kept["output"][-1]["content"][0]["text"]  # in this answer already
    _respond(
        kernel, app, "Correct: The user is called Ada. => The user is called Ada Lovelace.", conversation
    )
    assert kernel.get_conversation(app, conversation)["core_memory"] == ["The user is called Ada Lovelace."]
    answer = _respond(kernel, app, "What is my name?", conversation)
    assert [i["type"] for i in answer["output"]] == ["message"]  # nothing to keep: no call
    assert "Ada Lovelace" in answer["output"][0]["content"][0]["text"]
    calls = [r["call"] for r in AuditLog().query(app="notes", limit=200) if r["target"] == conversation]
    assert "conversations.core_memory.append" in calls and "conversations.core_memory.replace" in calls


def test_a_replace_of_a_fact_not_kept_fails_alone_and_the_answer_goes_on(kernel: Syscalls) -> None:
    app = kernel.apps.create(App("notes"))
    conversation = kernel.create_conversation(app, core=["Likes tea."])["id"]
    body = _respond(kernel, app, "Correct: Likes coffee. => Likes water.", conversation)
    call, message = body["output"]
    assert call["status"] == "failed" and "word for word" in call["error"]
    assert message["content"][0]["text"] == "- Likes tea."
    assert kernel.get_conversation(app, conversation)["core_memory"] == ["Likes tea."]


def test_without_the_capability_the_tools_are_not_offered(kernel: Syscalls) -> None:
    app = kernel.apps.create(App("plain", capabilities=("model:*", "tool:conversations")))
    conversation = kernel.create_conversation(app)["id"]
    body = _respond(kernel, app, "Remember: The user is called Ada.", conversation)
    assert [i["type"] for i in body["output"]] == ["message"]
    assert kernel.get_conversation(app, conversation)["core_memory"] == []


def test_over_http_the_tool_is_asked_for_and_needs_a_conversation(kernel: Syscalls) -> None:
    kernel.apps.create(App("web"))
    key = kernel.apps.issue_key("web")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(kernel)) as http:
        conversation = http.post("/v1/conversations", json={}, headers=headers).json()["id"]
        body = {
            "model": "m",
            "input": "Remember: Meetings are on Mondays.",
            "conversation": conversation,
            "tools": [{"type": "core_memory"}],
        }
        reply = http.post("/v1/responses", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["output"][0]["name"] == "core_memory_append"
        kept = http.get(f"/v1/conversations/{conversation}", headers=headers).json()
        assert kept["core_memory"] == ["Meetings are on Mondays."]
        alone = http.post(
            "/v1/responses",
            json={"model": "m", "input": "Remember: x", "tools": [{"type": "core_memory"}]},
            headers=headers,
        )
        assert alone.status_code == 400 and "conversation" in alone.json()["error"]["message"]
