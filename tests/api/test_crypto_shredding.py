"""Each app's data is sealed under its own data key, and deleting the app destroys that key: a canary
value the app put in a chat (audited with content), its key-value store and an uploaded file is never
on disk in the clear, and after the app is deleted nothing under $LLMASOS_HOME can give it back, while
the audit log still verifies."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.security import master_key
from llmasos.security.audit import AuditLog
from llmasos.security.data_keys import SHREDDED, data_keys

CANARY = "zebra-canary-4417-quokka"


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def _files_holding(home: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()
    )


def _chat_row() -> dict:
    return next(r for r in AuditLog().query(app="canary") if r["outcome"] == "finished")


def test_a_deleted_apps_canary_is_unreadable_anywhere_on_disk(tiny_server, llmasos_home: Path) -> None:
    key = tiny_server.new_app("canary", audit_content=True)
    app = tiny_server.client(key)
    chat = {"model": "tiny", "messages": [{"role": "user", "content": f"hi {CANARY}"}], "max_tokens": 2}
    assert app.post("/v1/chat/completions", json=chat).status_code == 200
    assert app.put("/os/kv/secret", json={"value": {"card": CANARY}}).status_code == 200
    upload = app.post(
        "/v1/files", files={"file": ("notes.txt", f"note {CANARY}".encode())}, data={"purpose": "assistants"}
    )
    assert upload.status_code == 200, upload.text
    # Readable through the app while it exists, and never written in the clear.
    assert app.get("/os/kv/secret").json()["value"] == {"card": CANARY}
    assert CANARY in app.get(f"/v1/files/{upload.json()['id']}/content").text
    assert CANARY in _chat_row()["prompt"]
    assert _files_holding(llmasos_home, CANARY.encode()) == []

    owner = tiny_server.syscalls.apps.get("canary").identity
    assert data_keys().has_key(owner)
    sealed_rows = [
        r["prompt"] for r in AuditLog().db.execute("SELECT prompt FROM audit WHERE prompt IS NOT NULL")
    ]
    assert sealed_rows and all(p.startswith("llmenc1:") for p in sealed_rows)

    assert tiny_server.client().delete("/os/apps/canary").status_code in (200, 204)
    assert not data_keys().has_key(owner)
    assert _files_holding(llmasos_home, CANARY.encode()) == []
    # The sealed audit content is still there, verified by the chain, but nothing can open it.
    assert AuditLog().verify().intact
    assert _chat_row()["prompt"] == SHREDDED
    wrapped = data_keys().db.execute("SELECT COUNT(*) AS n FROM data_keys WHERE owner = ?", (owner,))
    assert wrapped[0]["n"] == 0
