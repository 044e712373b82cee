"""The privacy budget is per analyst API key (an admin grants each key its own, refused once spent,
another key of the same app keeps its own), and data that fails decryption is a clear 503 over HTTP
and a one-line error in the CLI, naming what failed and what to do, never a 500 or a traceback."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from llmasos.data.schema import app_folder
from llmasos.library.store import ModelStore
from llmasos.security import master_key
from llmasos.security.data_keys import data_keys
from llmasos.storage import encrypted_db
from tests.api.test_privacy_http import Server, server  # noqa: F401 (the fixture)
from tests.helpers.cli import run_cli


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def test_each_analyst_key_has_its_own_budget_granted_by_an_admin(server: Server) -> None:  # noqa: F811
    first = server.new_app("analyst")
    admin = server.auth(server.admin_key)
    second = server.http.post("/os/apps/analyst/keys", headers=admin).json()["api_key"]
    hint = first[:9]  # what GET /os/apps/analyst lists for it
    assert hint + "…" in server.http.get("/os/apps/analyst", headers=admin).json()["keys"]

    granted = server.http.put("/os/stats/budgets/analyst", json={"epsilon": 1, "key": hint}, headers=admin)
    assert granted.status_code == 200, granted.text
    assert [k["hint"] for k in granted.json()["keys"]] == [hint + "…"]
    spent = server.http.get("/os/stats", params={"epsilon": 1}, headers=server.auth(first))
    assert spent.status_code == 200 and spent.json()["budget"] == {
        "total": 1.0,
        "spent": 1.0,
        "remaining": 0.0,
    }
    refused = server.http.get("/os/stats", params={"epsilon": 0.5}, headers=server.auth(first))
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "privacy_budget_exhausted"
    assert "ask an admin" in refused.json()["error"]["message"]

    # The app's other key was not charged: its budget is its own (the default, never granted).
    other = server.http.get("/os/stats", params={"epsilon": 1}, headers=server.auth(second))
    assert other.status_code == 200 and other.json()["budget"]["spent"] == 1.0
    assert other.json()["budget"]["total"] == 3.0
    # What a key without admin may see: noisy figures of every app, never the exact ones.
    assert {row["app"] for row in other.json()["data"]} >= {"analyst", "admin"}
    assert (
        server.http.get("/os/stats", params={"exact": "true"}, headers=server.auth(second)).status_code == 403
    )

    # An admin can take a key's budget away; an unknown key is named with the ones that exist.
    server.http.put("/os/stats/budgets/analyst", json={"epsilon": 0, "key": second[:9]}, headers=admin)
    assert server.http.get("/os/stats", headers=server.auth(second)).status_code == 403
    unknown = server.http.put(
        "/os/stats/budgets/analyst", json={"epsilon": 1, "key": "lmos-zzzz"}, headers=admin
    )
    assert unknown.status_code == 400 and hint in unknown.json()["error"]["message"]
    own = server.http.put("/os/stats/budgets/analyst", json={"epsilon": 9}, headers=server.auth(first))
    assert own.status_code == 403


def test_a_tampered_value_is_a_503_that_names_it_and_says_what_to_do(server: Server) -> None:  # noqa: F811
    key = server.new_app("vault")
    assert (
        server.http.put(
            "/os/kv/profile", json={"value": {"card": "4111"}}, headers=server.auth(key)
        ).status_code
        == 200
    )
    owner = server.syscalls.apps.get("vault").identity
    with encrypted_db.connect(app_folder(owner) / "data.db", data_keys().database_key(owner)) as db:
        stored = db.execute("SELECT value FROM kv WHERE key = 'profile'").fetchone()[0]
        prefix, _, body = stored.rpartition(":")
        flipped = bytearray(base64.b64decode(body))
        flipped[-1] ^= 1
        db.execute(
            "UPDATE kv SET value = ? WHERE key = 'profile'",
            (f"{prefix}:{base64.b64encode(flipped).decode()}",),
        )
    read = server.http.get("/os/kv/profile", headers=server.auth(key))
    assert read.status_code == 503, read.text
    error = read.json()["error"]
    assert error["type"] == "decryption_error"
    assert "'kv:profile'" in error["message"] and "restore the app's data from a backup" in error["message"]


def test_the_cli_names_the_damaged_chunk_of_an_encrypted_model(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore()
    store.pull(str(tiny_gguf), name="secret", encrypt=True, progress=False)
    path = store.model_path("secret")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x80
    path.write_bytes(bytes(data))
    code, out, err = run_cli(monkeypatch, capsys, "run", "-m", "secret", "--max-tokens", "2", "hi")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"{path.name}: chunk 0 failed authentication" in err and "pull the model again" in err
