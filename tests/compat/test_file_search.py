"""The official `openai` package's Responses API with the `file_search` tool against a real server on
the real default model and embedding model: the answer comes with a `file_search_call` item and
`file_citation` annotations naming the uploaded file, and "I don't know" when nothing relevant was
retrieved."""

from __future__ import annotations

import openai

from llmasos.services.citing import DONT_KNOW

HANDBOOK = b"""# Holidays

Every employee gets twenty-five days of paid vacation per year.

# Travel

Train tickets for business trips are booked through the office manager.
"""


def test_responses_with_file_search_cite_the_file(compat_server):
    key = compat_server.new_app_key("compat-file-search")
    client = openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0)
    store = client.vector_stores.create(name="handbook")
    attached = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("handbook.md", HANDBOOK)
    )
    assert attached.status == "completed", attached.last_error
    tools = [{"type": "file_search", "vector_store_ids": [store.id]}]
    response = client.responses.create(
        model="default",
        input="How many days of paid vacation does an employee get?",
        tools=tools,
        include=["file_search_call.results"],
        max_output_tokens=24,
        temperature=0,
    )
    search, message = response.output
    assert search.type == "file_search_call" and search.results
    assert "twenty-five days" in search.results[0].text
    notes = message.content[0].annotations
    assert notes and {n.type for n in notes} == {"file_citation"}
    assert {n.file_id for n in notes} == {attached.id} and notes[0].filename == "handbook.md"
    unrelated = client.responses.create(
        model="default", input="What is the boiling point of tungsten?", tools=tools, max_output_tokens=24
    )
    assert unrelated.output_text == DONT_KNOW
