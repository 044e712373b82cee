"""`client.chat(..., conversation=ID)` and `client.conversations` in-process: the SDK's local path
over the same system calls a server uses."""

from __future__ import annotations

import pytest

from llmasos.errors import DataNotFoundError, LLMasOSError
from llmasos.sdk.conversations import Conversations
from llmasos.security.apps import App


class _Local:
    mode = "local"

    def __init__(self, syscalls, app) -> None:
        self._pair = (syscalls, app)

    def system_calls(self):
        return self._pair


def test_chat_in_a_conversation_keeps_the_turns_and_explains_the_context(syscalls) -> None:
    app = syscalls.apps.create(App("sdk-user"))
    conversations = Conversations(_Local(syscalls, app))
    conversation = conversations.create(core_memory=["Ada likes tea."])
    first = conversations.respond(
        "tiny", [{"role": "user", "content": "Hello"}], conversation["id"], {"max_tokens": 3}
    )
    conversations.respond(
        "tiny", [{"role": "user", "content": "Again"}], conversation["id"], {"max_tokens": 3}
    )
    assert [(i["role"], i["content"][0]["text"]) for i in conversations.items(conversation["id"])] == [
        ("user", "Hello"),
        ("assistant", first),
        ("user", "Again"),
        ("assistant", conversations.items(conversation["id"])[-1]["content"][0]["text"]),
    ]
    context = conversations.context(conversations.last_response_id)
    assert [b["kind"] for b in context["blocks"]][:2] == ["core", "recent"]
    with pytest.raises(Exception, match="stop cannot be used with a conversation"):
        conversations.respond("tiny", [{"role": "user", "content": "x"}], conversation["id"], {"stop": ["."]})
    conversations.delete(conversation["id"])
    with pytest.raises(DataNotFoundError):
        conversations.items(conversation["id"])


def test_streamed_chat_in_a_conversation_yields_deltas_and_keeps_the_turn(syscalls) -> None:
    app = syscalls.apps.create(App("sdk-streamer"))
    conversations = Conversations(_Local(syscalls, app))
    conversation = conversations.create()["id"]
    stream = conversations.stream(
        "tiny", [{"role": "user", "content": "Hello"}], conversation, {"max_tokens": 4}
    )
    deltas = list(stream)
    assert deltas and stream.usage["completion_tokens"] == 4 and stream.finish_reason == "length"
    assert stream.response_id == conversations.last_response_id
    items = conversations.items(conversation)
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("user", "Hello"),
        ("assistant", "".join(deltas)),
    ]
    assert conversations.context(stream.response_id)["blocks"][-1]["kind"] == "input"


def test_streamed_chat_in_a_conversation_over_http(served) -> None:
    from llmasos.sdk.http import HTTPTransport

    transport = HTTPTransport("http://testserver", served.keys["alpha"], 30.0)
    transport._http = served.http  # the in-process server's transport
    transport._http.headers["Authorization"] = f"Bearer {served.keys['alpha']}"
    conversations = Conversations(transport)
    conversation = conversations.create()["id"]
    stream = conversations.stream(
        "tiny", [{"role": "user", "content": "Hi"}], conversation, {"max_tokens": 3}
    )
    text = "".join(stream)
    assert stream.response_id and stream.usage["completion_tokens"] == 3
    assert conversations.items(conversation)[-1]["content"][0]["text"] == text
    with pytest.raises(LLMasOSError, match="no conversation 'conv_missing'"):  # a 404, as its class
        list(conversations.stream("tiny", [{"role": "user", "content": "x"}], "conv_missing", {}))


def test_items_added_without_answers_are_paged_into_the_summary(syscalls) -> None:
    from llmasos.services import responses as flow
    from llmasos.services import summaries

    app = syscalls.apps.create(App("replayer"))
    conversation = syscalls.create_conversation(app)["id"]
    assert flow.page(syscalls, app, "tiny", conversation, 4) is None  # nothing to page yet
    for batch in range(3):
        turns = [
            {"role": "user", "content": f"Turn {batch}-{n}: the river was cold today."} for n in range(20)
        ]
        syscalls.add_conversation_items(app, conversation, turns)
    flow.page(syscalls, app, "tiny", conversation, 4).result(120)
    summaries.wait_idle(120)
    memory = syscalls.conversation_memory(app, conversation)
    assert memory.summary and 0 < memory.summary_upto < 60 + 1
    items = syscalls.conversation_items_after(app, conversation, 0)
    assert len(items) == 60 and {i.role for i in items} == {"user"}  # no answer was added
