"""Each app's database is SQLCipher under a key derived from its data key: a canary token uploaded in
a document is in no file under $LLMASOS_HOME while search still finds it, a plaintext database left by
an earlier version is converted on first open (atomically: a conversion cut short is started again)
with the same search results, and a wrong master key or a changed page is a clear error."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlcipher3.dbapi2 as sqlcipher

from llmasos.config import llmasos_home
from llmasos.data.app_data import app_data, close_app_data
from llmasos.data.schema import database_path
from llmasos.errors import DecryptionError, MasterKeyError
from llmasos.security import data_keys as data_keys_module
from llmasos.security import master_key
from llmasos.security.data_keys import data_keys
from llmasos.storage import encrypted_db
from tests.data.conftest import DataWorld

CANARY = "zqxcanary7f3kiwi"
DOC = (
    f"# Vault\n\nThe courier code is {CANARY} and it opens the north gate.\n\n"
    "# Garden\n\nTomatoes need sun, water and patience.\n"
).encode()


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def _files_holding(needle: bytes) -> list[Path]:
    return [p for p in llmasos_home().rglob("*") if p.is_file() and needle in p.read_bytes()]


def _hits(world: DataWorld, store_id: str, query: str) -> list[tuple[int, str]]:
    return [(h.chunk_id, h.text) for h in world.syscalls.search_store(world.alpha, store_id, query)]


def _decrypt_to_plaintext(path: Path, key: bytes) -> None:
    """What an earlier version left: the same database, plain SQLite (SQLCipher's own export)."""
    plain = path.with_name("plain.db")
    conn = encrypted_db.connect(path, key)
    conn.execute("ATTACH DATABASE ? AS plain KEY ''", (str(plain),))
    conn.execute("SELECT sqlcipher_export('plain')")
    conn.execute(f"PRAGMA plain.user_version = {conn.execute('PRAGMA user_version').fetchone()[0]}")
    conn.execute("DETACH DATABASE plain")
    conn.close()
    for sidecar in ("-wal", "-shm"):
        path.with_name(path.name + sidecar).unlink(missing_ok=True)
    plain.replace(path)


def test_a_canary_document_is_in_no_file_while_search_finds_it_and_is_unreadable_after_deletion(
    world: DataWorld, tmp_path: Path
) -> None:
    store = world.syscalls.create_store(world.alpha, "vault")
    world.add_document(world.alpha, store["id"], "vault.md", DOC)
    assert any(CANARY in text for _, text in _hits(world, store["id"], CANARY))
    folder = database_path(world.alpha.identity).parent
    assert {p.name for p in folder.iterdir()} >= {"data.db", "data.db-wal"}  # the log is checked too
    assert _files_holding(CANARY.encode()) == []
    assert _files_holding(b"courier code") == []
    copy = tmp_path / "copy"  # what a backup or the disk's free blocks would keep
    shutil.copytree(folder, copy)
    world.syscalls.delete_app_data(world.alpha)
    assert not folder.exists() and not data_keys().has_key(world.alpha.identity)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        sqlite3.connect(copy / "data.db").execute("SELECT count(*) FROM sqlite_master").fetchone()
    with pytest.raises(DecryptionError):  # any other app's key, or a guessed one, opens nothing
        encrypted_db.connect(copy / "data.db", data_keys().database_key(world.beta.identity))


def test_a_plaintext_database_is_converted_on_first_open_with_the_same_results(world: DataWorld) -> None:
    store = world.syscalls.create_store(world.alpha, "vault")
    world.add_document(world.alpha, store["id"], "vault.md", DOC)
    world.syscalls.kv_set(world.alpha, "k", {"v": 1})
    before = _hits(world, store["id"], "gate courier")
    owner = world.alpha.identity
    path = database_path(owner)
    close_app_data(owner)
    _decrypt_to_plaintext(path, data_keys().database_key(owner))
    assert path.read_bytes().startswith(encrypted_db.PLAINTEXT_HEADER) and _files_holding(CANARY.encode())
    # A conversion killed before its rename left a partial copy: it is discarded and done again.
    path.with_name("data.db.encrypting").write_bytes(b"torn")

    assert _hits(world, store["id"], "gate courier") == before
    assert world.syscalls.kv_get(world.alpha, "k")["value"] == {"v": 1}
    assert not path.read_bytes().startswith(encrypted_db.PLAINTEXT_HEADER)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith("data.db")) == [
        "data.db",
        "data.db-shm",
        "data.db-wal",
    ]
    assert _files_holding(CANARY.encode()) == []


def test_a_plaintext_database_still_in_its_write_ahead_log_is_converted(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    writer = sqlite3.connect(live, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x TEXT)")
    writer.execute("INSERT INTO t VALUES (?)", (CANARY,))
    killed = tmp_path / "killed"  # the files as a kill before the first checkpoint leaves them
    killed.mkdir()
    for name in ("live.db", "live.db-wal"):
        shutil.copy(tmp_path / name, killed / name)
    writer.close()
    path = killed / "live.db"
    assert CANARY.encode() not in path.read_bytes()  # the row is in the log only
    key = bytes(range(32))
    assert encrypted_db.encrypt_in_place(path, key)
    assert not any(CANARY.encode() in p.read_bytes() for p in killed.iterdir())
    assert encrypted_db.connect(path, key).execute("SELECT x FROM t").fetchall()[0][0] == CANARY
    assert not encrypted_db.encrypt_in_place(path, key)  # converted once


def test_a_changed_page_or_a_wrong_master_key_is_a_clear_error(
    world: DataWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = world.syscalls.create_store(world.alpha, "vault")
    world.add_document(world.alpha, store["id"], "vault.md", DOC)
    owner = world.alpha.identity
    path = database_path(owner)
    close_app_data(owner)
    with sqlcipher.connect(str(path)) as conn:  # fold the log in, so the pages below hold the rows
        conn.execute(f"PRAGMA key = \"x'{data_keys().database_key(owner).hex()}'\"")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    monkeypatch.setattr(data_keys_module, "_instances", {})  # a restarted server...
    monkeypatch.setenv(master_key.ENV_VAR, master_key.encode_key(master_key.new_key()))  # ...wrong key
    with pytest.raises(MasterKeyError, match="wrapped under master key"):
        app_data(owner)
    monkeypatch.delenv(master_key.ENV_VAR)
    monkeypatch.setattr(data_keys_module, "_instances", {})

    pages = bytearray(path.read_bytes())
    for page in range(1, len(pages) // 4096):  # every page but the first, which opens the file
        pages[page * 4096 + 100] ^= 1
    path.write_bytes(bytes(pages))
    with pytest.raises(DecryptionError, match="failed authentication") as refused:
        world.syscalls.search_store(world.alpha, store["id"], "courier")
    assert str(path) in str(refused.value) and "restore the app's data" in str(refused.value)
    close_app_data(owner)
    pages[100] ^= 1
    path.write_bytes(bytes(pages))
    with pytest.raises(DecryptionError, match="failed authentication"):
        app_data(owner)
