"""`/v1/responses` with OpenAI's `file_search` tool, through the official `openai` package on the tiny
model: the answer comes with a `file_search_call` item and `file_citation` annotations (file, chunk,
span), "I don't know" without a model call when nothing relevant is retrieved, and another app's
store is not found. The tiny model writes noise: what is checked holds whatever it says."""

from __future__ import annotations

import time

import openai
import pytest

from llmasos.services.citing import DONT_KNOW
from tests.helpers.fake_embedder import HashingEmbedder

DOC = (
    "# Backups\n\nBackups run every night and are kept for thirty days.\n\n"
    "# Parking\n\nVisitors park behind the blue building.\n"
)
SHORT = {"model": "tiny", "max_output_tokens": 4, "temperature": 0}


def _store(served, app: str) -> tuple[str, str]:
    syscalls = served.syscalls
    syscalls.use_embedder(HashingEmbedder)
    owner = syscalls.apps.get(app)
    store = syscalls.create_store(owner, "guide")
    file = syscalls.create_file(owner, "guide.md", DOC.encode())
    syscalls.attach_file(owner, store["id"], file["id"])
    while syscalls.get_store(owner, store["id"])["file_counts"]["in_progress"]:
        time.sleep(0.02)
    return store["id"], file["id"]


def test_an_answer_from_file_search_cites_file_chunk_and_span(served) -> None:
    store_id, file_id = _store(served, "alpha")
    client = served.openai()
    response = client.responses.create(
        input="How long are backups kept?",
        tools=[{"type": "file_search", "vector_store_ids": [store_id]}],
        include=["file_search_call.results"],
        **SHORT,
    )
    search, message = response.output
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == ["How long are backups kept?"]
    assert search.results[0].file_id == file_id and search.results[0].filename == "guide.md"
    assert "thirty days" in search.results[0].text
    note = message.content[0].annotations[0]
    assert note.type == "file_citation" and note.file_id == file_id and note.filename == "guide.md"
    assert 0 <= note.index <= len(response.output_text)
    start, end = note.model_extra["span"]
    assert "kept for thirty days" in DOC[start:end]  # the span is the cited text in the file
    assert response.tools[0].type == "file_search"
    context = served.call("alpha", "GET", f"/os/responses/{response.id}/context").json()
    assert context["blocks"][0]["kind"] == "file_search"
    assert context["blocks"][0]["passages"][0]["file_id"] == file_id
    # Streamed: the search item first, then the text, its annotations announced before it closes.
    tools = [{"type": "file_search", "vector_store_ids": [store_id]}]
    with client.responses.stream(input="Where do visitors park?", tools=tools, **SHORT) as stream:
        events = list(stream)
    # four tokens of the tiny model: "incomplete" (max_output_tokens) rather than "completed"
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["file_search_call", "message"]
    notes = [e.annotation for e in events if e.type == "response.output_text.annotation.added"]
    assert notes and notes[0]["file_id"] == file_id
    assert final.output[1].content[0].annotations[0].file_id == file_id


def test_nothing_relevant_means_i_dont_know_with_no_model_call_also_streamed(served) -> None:
    store_id, _ = _store(served, "alpha")
    client = served.openai()
    tools = [{"type": "file_search", "vector_store_ids": [store_id]}]
    response = client.responses.create(input="Gluon confinement in chromodynamics?", tools=tools, **SHORT)
    assert response.output_text == DONT_KNOW
    assert response.output[0].results is None and response.usage.input_tokens == 0
    assert served.syscalls.ps(served.syscalls.apps.get("alpha")) == []
    with client.responses.stream(input="Gluon confinement?", tools=tools, **SHORT) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == DONT_KNOW and kinds[-1] == "response.completed"
    assert "response.output_text.done" in kinds


def test_another_apps_store_and_bad_tools_are_refused(served) -> None:
    store_id, _ = _store(served, "alpha")
    beta = served.openai("beta")
    with pytest.raises(openai.NotFoundError):
        beta.responses.create(
            input="How long are backups kept?",
            tools=[{"type": "file_search", "vector_store_ids": [store_id]}],
            **SHORT,
        )
    for tools, words in (
        ([{"type": "file_search", "vector_store_ids": []}], "vector_store_ids"),
        ([{"type": "web_search"}], "not supported"),
        ([{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 0}], "max_num_results"),
    ):
        with pytest.raises(openai.BadRequestError, match=words):
            served.openai().responses.create(input="Hi", tools=tools, **SHORT)
