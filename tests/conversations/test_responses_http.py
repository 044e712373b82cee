"""`/v1/responses` and `/v1/conversations` driven by the official `openai` package (unchanged, over an
in-process transport) on the tiny model with a 256-token window: the tiny model writes noise, so
these tests check what must hold whatever it says — shapes, what is kept, what goes into the
context, that a long conversation never fails, isolation and bad input."""

from __future__ import annotations

import openai
import pytest

from llmasos.data.app_data import app_data
from llmasos.data.search_terms import hashed_query
from llmasos.security.audit import AuditLog
from llmasos.services import summaries

SHORT = {"model": "tiny", "max_output_tokens": 4, "temperature": 0}


def test_a_conversation_keeps_every_turn_and_the_openai_package_reads_them(served) -> None:
    client = served.openai()
    conversation = client.conversations.create(metadata={"topic": "pets"})
    assert conversation.object == "conversation" and conversation.metadata == {"topic": "pets"}
    first = client.responses.create(input="My cat is called Miso.", conversation=conversation.id, **SHORT)
    assert first.object == "response" and first.status in ("completed", "incomplete")
    assert first.output[0].type == "message" and first.output_text == first.output[0].content[0].text
    assert first.usage.output_tokens <= 4 and first.usage.input_tokens > 0
    second = client.responses.create(
        input=[{"role": "user", "content": [{"type": "input_text", "text": "What is my cat called?"}]}],
        conversation={"id": conversation.id},
        **SHORT,
    )
    items = client.conversations.items.list(conversation.id, order="asc")
    assert [(i.role, i.content[0].text) for i in items.data] == [
        ("user", "My cat is called Miso."),
        ("assistant", first.output_text),
        ("user", "What is my cat called?"),
        ("assistant", second.output_text),
    ]
    context = served.call("alpha", "GET", f"/os/responses/{second.id}/context").json()
    recent = next(b for b in context["blocks"] if b["kind"] == "recent")
    assert recent["items"] == [items.data[0].id, items.data[1].id]  # the first turn, verbatim
    assert client.responses.retrieve(second.id).output_text == second.output_text
    inputs = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in inputs.data] == ["What is my cat called?"]


def test_previous_response_id_chains_and_a_second_answer_to_the_same_turn_forks(served) -> None:
    client = served.openai()
    root = client.responses.create(input="Remember the word zephyr.", **SHORT)
    left = client.responses.create(input="Left branch.", previous_response_id=root.id, **SHORT)
    right = client.responses.create(input="Right branch.", previous_response_id=root.id, **SHORT)
    after_right = client.responses.create(input="And now?", previous_response_id=right.id, **SHORT)
    context = served.call("alpha", "GET", f"/os/responses/{after_right.id}/context").json()
    recent = next(b for b in context["blocks"] if b["kind"] == "recent")
    # root's two messages and right's two: never the left branch's turn
    assert len(recent["items"]) == 4
    left_items = {i.id for i in client.responses.input_items.list(left.id).data}
    assert not left_items & set(recent["items"])
    assert client.responses.retrieve(left.id).previous_response_id == root.id


def test_a_stream_has_openais_events_in_order_and_its_text_is_kept(served) -> None:
    client = served.openai()
    conversation = client.conversations.create()
    events = list(client.responses.create(input="Hello", conversation=conversation.id, stream=True, **SHORT))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == text == events[-4].text
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert items[-1].content[0].text == text and items[-1].id == final.output[0].id


def test_a_long_conversation_never_fails_pages_to_a_summary_and_recalls_old_turns(served) -> None:
    """Sixteen turns of ~170 tokens each on a 256-token window: every response answers, the context
    stays inside the window, older turns are summarized in the background, and an old turn whose
    rare word the new message repeats is recalled."""
    client = served.openai()
    conversation = client.conversations.create(extra_body={"core_memory": ["The user's name is Ada."]})
    client.responses.create(input="My locker code is quetzal seven.", conversation=conversation.id, **SHORT)
    for turn in range(16):
        filler = f"Turn {turn}: the weather stays grey and the train runs late again today, as usual. " * 2
        reply = client.responses.create(input=filler, conversation=conversation.id, **SHORT)
        assert reply.status in ("completed", "incomplete")
        assert reply.usage.input_tokens + reply.usage.output_tokens <= 256
    summaries.wait_idle()
    asked = client.responses.create(input="What was the quetzal code?", conversation=conversation.id, **SHORT)
    context = served.call("alpha", "GET", f"/os/responses/{asked.id}/context").json()
    kinds = {b["kind"]: b for b in context["blocks"]}
    assert kinds["core"]["facts"] == 1
    assert kinds["summary"]["covers_upto_seq"] > 0
    recalled = kinds["recalled"]["items"]
    assert any("quetzal" in r["matched"] for r in recalled)
    assert asked.usage.input_tokens <= context["budget"]
    huge = client.responses.create(input="word " * 3000, conversation=conversation.id, **SHORT)
    assert huge.status in ("completed", "incomplete")  # shortened, not refused


def test_store_false_keeps_nothing_and_deleting_a_conversation_leaves_no_rows(served) -> None:
    client = served.openai()
    loose = client.responses.create(input="Not kept", store=False, **SHORT)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(loose.id)
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "x"}])
    kept = client.responses.create(input="zanzibar", conversation=conversation.id, **SHORT)
    owner = served.syscalls.apps.get("alpha").identity
    indexed = "SELECT count(*) FROM items_fts WHERE items_fts MATCH ?"
    zanzibar = hashed_query(app_data(owner).search_key(), "zanzibar")  # the index holds hashed words
    assert app_data(owner).db.execute(indexed, (zanzibar,))[0][0] == 1
    assert client.conversations.delete(conversation.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    usage = served.call("alpha", "GET", "/os/apps/alpha/data").json()
    assert usage["conversations"] == 0 and usage["conversation_items"] == 0  # no thread left behind
    assert app_data(owner).db.execute(indexed, (zanzibar,))[0][0] == 0


def test_every_conversation_endpoint_answers_404_for_another_apps_ids(served) -> None:
    alpha = served.openai("alpha")
    conversation = alpha.conversations.create(items=[{"role": "user", "content": "secret"}])
    item = alpha.conversations.items.list(conversation.id).data[0]
    response = alpha.responses.create(input="private", conversation=conversation.id, **SHORT)
    c, i, r = conversation.id, item.id, response.id
    calls = [
        ("GET", f"/v1/conversations/{c}", None),
        ("POST", f"/v1/conversations/{c}", {"metadata": {"a": "b"}}),
        ("DELETE", f"/v1/conversations/{c}", None),
        ("POST", f"/v1/conversations/{c}/items", {"items": [{"role": "user", "content": "x"}]}),
        ("GET", f"/v1/conversations/{c}/items", None),
        ("GET", f"/v1/conversations/{c}/items/{i}", None),
        ("DELETE", f"/v1/conversations/{c}/items/{i}", None),
        ("GET", f"/v1/responses/{r}", None),
        ("DELETE", f"/v1/responses/{r}", None),
        ("GET", f"/v1/responses/{r}/input_items", None),
        ("GET", f"/os/responses/{r}/context", None),
        ("POST", "/v1/responses", {"model": "tiny", "input": "x", "conversation": c}),
        ("POST", "/v1/responses", {"model": "tiny", "input": "x", "previous_response_id": r}),
    ]
    for method, path, body in calls:
        answer = served.call("beta", method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["type"] == "not_found_error"
    refused = [row for row in AuditLog().query(app="beta", limit=500) if row["outcome"] == "error"]
    assert len(refused) == len(calls)
    assert alpha.conversations.retrieve(c).id == c and alpha.responses.retrieve(r).id == r


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"input": ""}, "input is empty"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "only text parts",
        ),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "only messages are supported"),
        ({"input": [{"role": "robot", "content": "x"}]}, "role must be one of"),
        ({"input": "x", "conversation": "conv_1", "previous_response_id": "resp_1"}, "not both"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "is not supported by /v1/responses"),
    ],
)
def test_bad_input_is_a_clear_400_and_writes_nothing(served, body: dict, says: str) -> None:
    answer = served.call("alpha", "POST", "/v1/responses", json={"model": "tiny", **body})
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]["message"]
