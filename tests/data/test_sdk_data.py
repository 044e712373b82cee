"""`client.docs` and `client.kv` of the SDK, in-process (the same calls go over HTTP to a server),
with the real embedding model."""

from __future__ import annotations

import pytest

import llmasos
from llmasos.errors import DataNotFoundError

GUIDE = b"""# Setup

Install the package with pip and run the server.

# Backups

Backups run every night at two o'clock and are kept for thirty days.
"""


def test_docs_add_search_cite_and_remove_and_kv() -> None:
    with llmasos.Client(local=True) as client:
        store = client.docs.create_store("guide")
        added = client.docs.add(store["id"], GUIDE, filename="guide.md", attributes={"v": 2})
        assert added["status"] == "completed", added["last_error"]
        hits = client.docs.search(store["id"], "how long are backups retained", explain=True)
        top = hits[0]
        assert top["heading"] == "Backups" and top["filename"] == "guide.md"
        assert GUIDE.decode()[top["span"][0] : top["span"][1]] == top["text"]
        assert set(top["explain"]) <= {"bm25", "vector"} and top["explain"]
        assert [f["id"] for f in client.docs.list(store["id"])] == [added["id"]]
        client.docs.remove(added["id"])
        assert client.docs.search(store["id"], "backups") == []

        client.kv.set("prefs/theme", {"dark": True})
        client.kv.set("prefs/lang", "en", ttl_s=60)
        assert client.kv.get("prefs/theme") == {"dark": True}
        assert client.kv.list("prefs/") == ["prefs/lang", "prefs/theme"]
        client.kv.delete("prefs/theme")
        assert client.kv.get("prefs/theme", None) is None
        with pytest.raises(DataNotFoundError):
            client.kv.get("prefs/theme")
