"""The official `openai` package's Responses and Conversations APIs against a real server on the
real default model, unchanged: a conversation the server remembers, a chain by
`previous_response_id`, a stream read as the package's own event types."""

from __future__ import annotations

import openai

FEW = {"model": "default", "max_output_tokens": 8, "temperature": 0}


def test_a_conversation_remembers_and_a_chain_continues(compat_server):
    key = compat_server.new_app_key("compat-conversations")
    client = openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0)
    conversation = client.conversations.create(metadata={"user": "ada"})
    first = client.responses.create(
        input="My favourite colour is teal. Reply OK.", conversation=conversation.id, **FEW
    )
    assert first.status in ("completed", "incomplete") and first.output_text
    second = client.responses.create(
        input="What is my favourite colour? One word.", conversation=conversation.id, **FEW
    )
    assert second.output_text and second.usage.input_tokens > first.usage.input_tokens
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.role for i in items] == ["user", "assistant", "user", "assistant"]
    chained = client.responses.create(input="Thanks.", previous_response_id=second.id, **FEW)
    assert client.responses.retrieve(chained.id).previous_response_id == second.id
    # A stream ends in response.completed, or response.incomplete when max_output_tokens ends it.
    events = list(client.responses.create(input="Say hi.", conversation=conversation.id, stream=True, **FEW))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert "".join(deltas) == events[-1].response.output_text
    assert client.conversations.delete(conversation.id).deleted
