"""The official `openai` package's files and vector-store helpers against a real server, unchanged,
with the real embedding model (all-MiniLM-L6-v2): upload, poll, search, delete."""

from __future__ import annotations

import openai

HANDBOOK = b"""# Holidays

Every employee gets twenty-five days of paid vacation per year.

# Equipment

New staff receive a laptop and a monitor on their first day.

# Travel

Train tickets for business trips are booked through the office manager.
"""


def test_upload_and_poll_then_search_finds_the_passage(compat_server):
    key = compat_server.new_app_key("compat-vector-stores")
    client = openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0)
    uploaded = client.files.create(file=("handbook.md", HANDBOOK), purpose="assistants")
    assert uploaded.bytes == len(HANDBOOK) and uploaded.filename == "handbook.md"
    store = client.vector_stores.create(name="handbook")
    attached = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("policies.md", HANDBOOK), attributes={"team": "hr"}
    )
    assert attached.status == "completed", attached.last_error
    # Semantic: no word of the question but "days" is in the answer's passage.
    results = client.vector_stores.search(store.id, query="How much time off do I get?", max_num_results=3)
    assert results.data[0].content[0].text.startswith("Every employee gets twenty-five days")
    assert results.data[0].filename == "policies.md" and results.data[0].attributes == {"team": "hr"}
    trains = client.vector_stores.search(store.id, query="who books train tickets", max_num_results=1)
    assert "office manager" in trains.data[0].content[0].text
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 1
    assert client.vector_stores.delete(store.id).deleted
    assert client.files.delete(uploaded.id).deleted
