"""Export of an app's data as files (`GET /os/apps/{name}/export` through the SDK, and `llmasos data
export`): what was stored comes back out, byte for byte and item for item, and only to its app."""

from __future__ import annotations

import json
import stat
import time

import pytest

from llmasos.errors import LLMasOSError
from llmasos.programs import default_registry
from llmasos.sdk.data import export_app
from llmasos.sdk.http import HTTPTransport
from tests.helpers.cli import run_cli
from tests.helpers.fake_embedder import HashingEmbedder

DOC = "# Backups\n\nBackups run every night and are kept for thirty days.\n"


def _transport(served, app: str) -> HTTPTransport:
    transport = HTTPTransport("http://testserver", served.keys[app], 30.0)
    transport._http = served.http  # the in-process server
    return transport


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_apps_data_round_trips_through_the_export(served, tmp_path) -> None:
    syscalls = served.syscalls
    syscalls.use_embedder(HashingEmbedder)
    alpha = syscalls.apps.get("alpha")
    store = syscalls.create_store(alpha, "guide")
    file = syscalls.create_file(alpha, "guide.md", DOC.encode())
    syscalls.attach_file(alpha, store["id"], file["id"], {"team": "ops"})
    while syscalls.get_store(alpha, store["id"])["file_counts"]["in_progress"]:
        time.sleep(0.02)
    conversation = syscalls.create_conversation(
        alpha, {"topic": "pets"}, [{"role": "user", "content": "My cat is Miso."}], ["Likes cats."]
    )
    syscalls.kv_set(alpha, "city", {"name": "Oslo"})
    triple = {"operation": "add", "subject": "Miso", "relation": "is a", "object": "cat"}
    default_registry().run(syscalls, alpha, "knowledge", triple, kind="tool")

    folder = tmp_path / "alpha-export"
    transport = _transport(served, "alpha")
    transport._http.headers["Authorization"] = f"Bearer {served.keys['alpha']}"
    manifest = export_app(transport, "alpha", folder)

    assert manifest["app"] == "alpha" and manifest["counts"]["files"] == 1
    assert (folder / "files" / file["id"] / "guide.md").read_bytes() == DOC.encode()
    assert _lines(folder / "files.jsonl")[0]["filename"] == "guide.md"
    (exported_store,) = _lines(folder / "vector_stores.jsonl")
    assert exported_store["id"] == store["id"] and exported_store["files"][0]["attributes"] == {"team": "ops"}
    chunk = _lines(folder / "chunks.jsonl")[0]
    start, end = chunk["span"]
    assert chunk["file_id"] == file["id"] and DOC[start:end] == chunk["text"]
    (exported_conversation,) = _lines(folder / "conversations.jsonl")
    assert exported_conversation["core_memory"] == ["Likes cats."]
    assert exported_conversation["metadata"] == {"topic": "pets"}
    items = _lines(folder / "conversations" / f"{conversation['id']}.jsonl")
    assert [(i["role"], i["text"]) for i in items] == [("user", "My cat is Miso.")]
    assert _lines(folder / "kv.jsonl")[0]["value"] == {"name": "Oslo"}
    assert _lines(folder / "knowledge.jsonl") == [{"subject": "Miso", "relation": "is a", "object": "cat"}]
    assert stat.S_IMODE((folder / "kv.jsonl").stat().st_mode) == 0o600

    beta = _transport(served, "beta")
    beta._http.headers["Authorization"] = f"Bearer {served.keys['beta']}"
    with pytest.raises(LLMasOSError, match="no app 'alpha' whose data you may export"):
        export_app(beta, "alpha", tmp_path / "stolen")
    assert not (tmp_path / "stolen").exists()
    with pytest.raises(LLMasOSError, match="not empty"):
        export_app(transport, "alpha", folder)


def test_data_export_on_the_command_line(monkeypatch, capsys, tmp_path) -> None:
    assert run_cli(monkeypatch, capsys, "kv", "set", "city", '{"name": "Oslo"}')[0] == 0
    code, out, err = run_cli(monkeypatch, capsys, "data", "export", "admin", str(tmp_path / "out"))
    assert code == 0, err
    assert "1 kv" in out and _lines(tmp_path / "out" / "kv.jsonl")[0]["value"] == {"name": "Oslo"}
    code, _, err = run_cli(monkeypatch, capsys, "data", "export", "admin", str(tmp_path / "out"))
    assert code == 1 and "not empty" in err
