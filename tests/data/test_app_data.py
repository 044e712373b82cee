"""Each app's data through the system calls: ingestion and hybrid search, isolation, quotas, the
lifecycle (no orphans), re-indexing, and the key-value store."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest

from llmasos.data.app_data import app_data
from llmasos.data.pages import PageRequest
from llmasos.data.schema import app_folder
from llmasos.data.search import SearchOptions
from llmasos.data.vector_stores import attach_files
from llmasos.errors import DataNotFoundError, InvalidRequestError, StorageQuotaError
from llmasos.security.apps import App
from llmasos.security.audit import AuditLog
from llmasos.security.data_keys import data_keys
from llmasos.storage import encrypted_db
from tests.data.conftest import DataWorld

DOC = b"""# Cats

Cats sleep for most of the day and hunt at dusk.

# Dogs

Dogs bark at the mailman every single morning.

# Ferns

Ferns grow well in deep shade under trees.
"""


def _counts(world: DataWorld, app) -> dict[str, int]:
    db = app_data(app.identity).db
    tables = ("files", "store_files", "chunks", "vector_stores", "kv")
    counts = {t: db.execute(f"SELECT count(*) FROM {t}")[0][0] for t in tables}
    counts["fts"] = db.execute("SELECT count(*) FROM chunks_fts")[0][0]
    return counts


def test_a_document_is_chunked_embedded_and_found_by_hybrid_search(world: DataWorld) -> None:
    s = world.syscalls
    store = s.create_store(world.alpha, "pets")
    attached = world.add_document(world.alpha, store["id"], "pets.md", DOC)
    assert attached["status"] == "completed"
    assert attached["progress"] == {"chunks_done": 3, "chunks_total": 3}
    hits = s.search_store(world.alpha, store["id"], "when does the dog bark", SearchOptions(explain=True))
    assert hits[0].text == "Dogs bark at the mailman every single morning."
    assert hits[0].heading == "Dogs"
    assert set(hits[0].explain) == {"bm25", "vector"}
    assert DOC.decode()[hits[0].start : hits[0].end] == hits[0].text  # the span cites the file's text
    only_bm25 = s.search_store(world.alpha, store["id"], "shade trees", SearchOptions(mode="bm25"))
    assert [h.heading for h in only_bm25] == ["Ferns"]


def test_embedding_tokens_are_charged_to_the_app_in_the_audit_log(world: DataWorld) -> None:
    store = world.syscalls.create_store(world.alpha, "pets")
    world.add_document(world.alpha, store["id"], "pets.md", DOC)
    world.syscalls.search_store(world.alpha, store["id"], "cats")
    rows = AuditLog().query(app="alpha")
    ingest = [r for r in rows if r["call"] == "data.ingest"]
    assert ingest and ingest[0]["outcome"] == "completed" and ingest[0]["tokens_in"] > 0
    search = [r for r in rows if r["call"] == "vector_stores.search"]
    assert search and search[0]["tokens_in"] > 0


def test_a_file_is_not_searchable_until_its_ingestion_is_complete(world: DataWorld) -> None:
    s = world.syscalls
    store = s.create_store(world.alpha, "pets")
    world.add_document(world.alpha, store["id"], "first.md", b"Parrots talk.")
    release = threading.Event()
    inner = world.embedder.embed

    def slow_embed(texts):
        if any("Dogs" in t for t in texts):
            release.wait(10)
        return inner(texts)

    world.embedder.embed = slow_embed  # type: ignore[method-assign]
    file = s.create_file(world.alpha, "pets.md", DOC)
    s.attach_file(world.alpha, store["id"], file["id"])
    time.sleep(0.2)
    assert s.get_store_file(world.alpha, store["id"], file["id"])["status"] == "in_progress"
    assert all(h.file_id != file["id"] for h in s.search_store(world.alpha, store["id"], "dogs bark mailman"))
    release.set()
    world.settle(world.alpha, store["id"])
    assert s.search_store(world.alpha, store["id"], "dogs bark mailman")[0].file_id == file["id"]


def test_a_file_that_cannot_be_read_fails_with_its_reason_and_leaves_nothing(world: DataWorld) -> None:
    store = world.syscalls.create_store(world.alpha, "docs")
    attached = world.add_document(world.alpha, store["id"], "paper.pdf", b"not a pdf, just text")
    assert attached["status"] == "failed"
    assert attached["last_error"]["code"] == "unsupported_file"
    assert "not a PDF" in attached["last_error"]["message"]
    assert _counts(world, world.alpha)["chunks"] == 0


def test_filters_select_files_by_attributes_and_malformed_ones_are_refused(world: DataWorld) -> None:
    s = world.syscalls
    store = s.create_store(world.alpha, "mixed")
    world.add_document(
        world.alpha, store["id"], "a.md", b"Dogs bark loudly.", attributes={"lang": "en", "year": 2020}
    )
    world.add_document(
        world.alpha, store["id"], "b.md", b"Dogs bark softly.", attributes={"lang": "fr", "year": 2024}
    )
    eq = s.search_store(
        world.alpha,
        store["id"],
        "dogs bark",
        SearchOptions(filters={"type": "eq", "key": "lang", "value": "fr"}),
    )
    assert [h.filename for h in eq] == ["b.md"]
    both = {
        "type": "and",
        "filters": [
            {"type": "gte", "key": "year", "value": 2021},
            {"type": "in", "key": "lang", "value": ["en", "fr"]},
        ],
    }
    assert [
        h.filename for h in s.search_store(world.alpha, store["id"], "dogs", SearchOptions(filters=both))
    ] == ["b.md"]
    for bad in (
        {"type": "eq", "value": 1},
        {"type": "near", "key": "x", "value": 1},
        {"type": "and", "filters": []},
        {"type": "gt", "key": "year", "value": "x"},
    ):
        with pytest.raises(InvalidRequestError):
            s.search_store(world.alpha, store["id"], "dogs", SearchOptions(filters=bad))


def test_another_apps_ids_are_not_found_and_the_attempt_is_audited(world: DataWorld) -> None:
    s, alpha, beta = world.syscalls, world.alpha, world.beta
    store = s.create_store(alpha, "private")
    attached = world.add_document(alpha, store["id"], "secret.md", DOC)
    file_id = attached["id"]
    s.kv_set(alpha, "token", "alpha's")
    batch = s.create_batch(alpha, store["id"], [file_id])
    world.settle(alpha, store["id"])
    attempts = [
        lambda: s.get_file(beta, file_id),
        lambda: s.file_content(beta, file_id),
        lambda: s.delete_file(beta, file_id),
        lambda: s.get_store(beta, store["id"]),
        lambda: s.update_store(beta, store["id"], "x", None),
        lambda: s.delete_store(beta, store["id"]),
        lambda: s.attach_file(beta, store["id"], file_id),
        lambda: s.get_store_file(beta, store["id"], file_id),
        lambda: s.list_store_files(beta, store["id"], PageRequest()),
        lambda: s.detach_file(beta, store["id"], file_id),
        lambda: s.create_batch(beta, store["id"], [file_id]),
        lambda: s.get_batch(beta, store["id"], batch["id"]),
        lambda: s.cancel_batch(beta, store["id"], batch["id"]),
        lambda: s.search_store(beta, store["id"], "cats"),
        lambda: s.kv_get(beta, "token"),
        lambda: s.kv_delete(beta, "token"),
    ]
    for attempt in attempts:
        with pytest.raises(DataNotFoundError):
            attempt()
    assert s.list_files(beta, PageRequest())["data"] == []
    assert s.list_stores(beta, PageRequest())["data"] == []
    assert s.kv_list(beta)["data"] == []
    denied = [r for r in AuditLog().query(app="beta", limit=100) if r["outcome"] == "error"]
    assert len(denied) == len(attempts)
    assert s.get_file(alpha, file_id)["id"] == file_id and s.kv_get(alpha, "token")["value"] == "alpha's"


def test_an_upload_over_quota_is_refused_and_writes_nothing(world: DataWorld) -> None:
    s = world.syscalls
    admin = s.apps.create(App("root", capabilities=("admin",)))
    s.set_data_quota(admin, "alpha", max_bytes=1000, max_items=3)
    s.create_file(world.alpha, "small.txt", b"x" * 500)
    with pytest.raises(StorageQuotaError, match="quota"):
        s.create_file(world.alpha, "big.txt", b"y" * 600)
    s.create_store(world.alpha, "one")
    s.kv_set(world.alpha, "k", 1)
    with pytest.raises(StorageQuotaError, match="items"):
        s.kv_set(world.alpha, "k2", 2)
    usage = s.data_usage(world.alpha, "alpha")
    assert (usage["files"], usage["items"], usage["max_bytes"]) == (1, 3, 1000)
    with pytest.raises(Exception, match="admin"):
        s.data_usage(world.alpha, "beta")


def test_deleting_a_file_a_store_or_the_app_leaves_no_orphans(world: DataWorld) -> None:
    s, alpha = world.syscalls, world.alpha
    store = s.create_store(alpha, "a")
    other = s.create_store(alpha, "b")
    kept = world.add_document(alpha, store["id"], "kept.md", DOC)
    gone = world.add_document(alpha, store["id"], "gone.md", b"Owls hunt at night.")
    s.attach_file(alpha, other["id"], kept["id"])
    world.settle(alpha, other["id"])
    s.search_store(alpha, store["id"], "owls")  # builds the vector index too
    s.delete_file(alpha, gone["id"])
    counts = _counts(world, alpha)
    assert counts["chunks"] == counts["fts"] == 6  # kept.md's 3 chunks in each of the two stores
    assert all(h.file_id != gone["id"] for h in s.search_store(alpha, store["id"], "owls hunt night"))
    s.delete_store(alpha, other["id"])
    assert _counts(world, alpha)["chunks"] == _counts(world, alpha)["fts"] == 3
    s.delete_store(alpha, store["id"])
    assert _counts(world, alpha) == {
        "files": 1,
        "store_files": 0,
        "chunks": 0,
        "vector_stores": 0,
        "kv": 0,
        "fts": 0,
    }
    s.kv_set(alpha, "k", 1)
    folder = app_folder(alpha.identity)
    root = s.apps.create(App("root", capabilities=("admin",)))
    s.remove_app(root, "alpha")
    assert not folder.exists()


def test_the_database_is_private_in_wal_mode_with_its_schema_versions(world: DataWorld) -> None:
    world.syscalls.kv_set(world.alpha, "k", 1)
    path = app_folder(world.alpha.identity) / "data.db"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):  # SQLCipher: no plaintext page
        sqlite3.connect(path).execute("SELECT count(*) FROM sqlite_master").fetchone()
    conn = encrypted_db.connect(path, data_keys().database_key(world.alpha.identity))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, conn.execute("PRAGMA user_version").fetchone()[0] + 1))
    assert len(versions) >= 5


def test_a_new_embedding_model_reindexes_the_store_before_it_is_searched(world: DataWorld) -> None:
    s = world.syscalls
    store = s.create_store(world.alpha, "pets")
    world.add_document(world.alpha, store["id"], "pets.md", DOC)
    world.embedder.name = "hashing-test-v2"
    seen = world.embedder.texts_seen
    hits = s.search_store(world.alpha, store["id"], "dogs bark")
    assert hits[0].heading == "Dogs"
    assert world.embedder.texts_seen - seen == 3 + 1  # every chunk again, then the query
    models = app_data(world.alpha.identity).db.execute("SELECT DISTINCT model FROM chunks")
    assert [r[0] for r in models] == ["hashing-test-v2"]


def test_the_key_value_store_keeps_json_with_ttl_prefixes_and_pages(world: DataWorld) -> None:
    s, app = world.syscalls, world.alpha
    s.kv_set(app, "user:1", {"name": "Ada", "tags": ["x"]})
    s.kv_set(app, "user:2", [1, 2.5, None])
    s.kv_set(app, "session", "abc", ttl_s=0.05)
    assert s.kv_get(app, "user:1")["value"] == {"name": "Ada", "tags": ["x"]}
    page = s.kv_list(app, prefix="user:", limit=1)
    assert [k["key"] for k in page["data"]] == ["user:1"] and page["has_more"]
    assert [k["key"] for k in s.kv_list(app, prefix="user:", after="user:1")["data"]] == ["user:2"]
    time.sleep(0.1)
    with pytest.raises(DataNotFoundError, match="expired"):
        s.kv_get(app, "session")
    s.kv_delete(app, "user:2")
    assert [k["key"] for k in s.kv_list(app)["data"]] == ["user:1"]
    with pytest.raises(InvalidRequestError, match="not JSON"):
        s.kv_set(app, "bad", float("nan"))
    with pytest.raises(InvalidRequestError, match="key"):
        s.kv_set(app, "", 1)


def test_files_left_in_progress_by_a_stopped_server_are_ingested_on_resume(world: DataWorld) -> None:
    s = world.syscalls
    store = s.create_store(world.alpha, "pets")
    file = s.create_file(world.alpha, "pets.md", DOC)
    # What a server killed mid-ingestion leaves: the attachment recorded, no chunks, nothing queued.
    attach_files(app_data(world.alpha.identity), store["id"], [file["id"]])
    assert s.get_store_file(world.alpha, store["id"], file["id"])["status"] == "in_progress"
    assert s.search_store(world.alpha, store["id"], "dogs bark") == []
    restarted = world.syscalls.__class__(s.kernel, s.apps, audit=s.audit)
    restarted.use_embedder(lambda: world.embedder)
    assert restarted.resume_ingestion() == 1
    world.settle(world.alpha, store["id"])
    assert s.search_store(world.alpha, store["id"], "dogs bark")[0].heading == "Dogs"
