"""`llmasos apps`, `ps`, `audit` and `serve`'s options, run as a user would."""

from __future__ import annotations

import json

import httpx
import pytest

from llmasos.cli.serve import parse_size
from llmasos.errors import InvalidRequestError
from llmasos.sdk.discovery import remove_server_file, write_server_file
from tests.helpers.cli import run_cli


def test_apps_create_prints_a_key_once_that_the_server_accepts(tiny_server, monkeypatch, capsys):
    code, out, err = run_cli(
        monkeypatch, capsys, "apps", "create", "notes", "--priority", "batch", "--allow", "model:tiny"
    )
    assert code == 0 and "shown once" in err
    key = out.strip()
    r = httpx.get(tiny_server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["tiny"]
    code, out, _ = run_cli(monkeypatch, capsys, "apps", "show", "notes", "--json")
    info = json.loads(out)
    assert info["priority"] == "batch" and key not in out and len(info["keys"]) == 1
    code, _, err = run_cli(monkeypatch, capsys, "apps", "create", "notes")
    assert code == 1 and "already exists" in err
    code, _, err = run_cli(monkeypatch, capsys, "apps", "create", "x", "--priority", "urgent")
    assert code == 1 and "priority" in err
    assert run_cli(monkeypatch, capsys, "apps", "rm", "notes")[0] == 0
    r = httpx.get(tiny_server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401  # removing the app revoked its key


def test_ps_and_audit_commands(tiny_server, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "ps")
    assert code == 1 and "llmasos serve" in err  # no server recorded yet
    write_server_file(tiny_server.url)
    try:
        tiny_server.client().post("/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 2})
        code, out, _ = run_cli(monkeypatch, capsys, "ps", "--all", "--json")
        assert code == 0
        (p,) = [p for p in json.loads(out) if p["tokens_out"] == 2]
        assert p["state"] == "finished" and p["app"] == "admin"
    finally:
        remove_server_file()
    tiny_server.client(tiny_server.new_app("limited", capabilities=("model:none",))).post(
        "/v1/completions", json={"model": "tiny", "prompt": "a"}
    )
    code, out, _ = run_cli(monkeypatch, capsys, "audit", "--denied", "--json")
    rows = json.loads(out)
    assert code == 0 and rows and all(not r["allowed"] for r in rows)
    assert any(r["app"] == "limited" and r["call"] == "generate" for r in rows)
    code, _, err = run_cli(monkeypatch, capsys, "audit", "--verify", "--app", "admin")
    assert code == 0 and "intact" in err


@pytest.mark.parametrize(
    ("text", "size"), [("2GiB", 2 * 2**30), ("1.5G", 1_500_000_000), ("512MiB", 512 * 2**20), ("1000", 1000)]
)
def test_memory_budget_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "2XB", "-1G", "0"])
def test_bad_memory_budget_sizes(text):
    with pytest.raises(InvalidRequestError, match="memory size"):
        parse_size(text)


def test_call_runs_a_service_from_the_command_line(tiny_server, monkeypatch, capsys):
    write_server_file(tiny_server.url)
    try:
        code, out, err = run_cli(
            monkeypatch,
            capsys,
            "call",
            "classify",
            "I loved it",
            "-m",
            "tiny",
            "--param",
            'labels=["good","bad"]',
        )
        assert code == 0, err
        assert out.strip() in ("good", "bad")
        code, out, _ = run_cli(
            monkeypatch,
            capsys,
            "call",
            "classify",
            "-",
            "-m",
            "tiny",
            "--param",
            'labels=["x","y"]',
            "--json",
            stdin="some text",
        )
        result = json.loads(out)
        assert code == 0 and result["output"] in ("x", "y") and result["usage"]["completion_tokens"] >= 1
        code, _, err = run_cli(
            monkeypatch, capsys, "call", "classify", "text", "-m", "tiny", "--param", "labels"
        )
        assert code == 1 and "KEY=VALUE" in err
        code, _, err = run_cli(monkeypatch, capsys, "call", "nope", "text")
        assert code == 1 and "summarize" in err
    finally:
        remove_server_file()
