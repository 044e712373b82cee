"""`llmasos docs add/ls/search/rm` and `llmasos kv set/get/ls/rm`, in-process (no server running)."""

from __future__ import annotations

import json

from tests.helpers.cli import run_cli


def test_docs_add_search_ls_rm(monkeypatch, capsys, tmp_path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text(
        "# Parking\n\nVisitors park behind the blue building.\n\n# Lunch\n\nThe canteen opens at noon.\n"
    )
    code, out, err = run_cli(monkeypatch, capsys, "docs", "add", str(notes), "--store", "office")
    assert code == 0, err
    file_id, name, status = out.split()[:3]
    assert (name, status) == ("notes.md", "completed")
    code, out, err = run_cli(
        monkeypatch, capsys, "docs", "search", "where can guests leave their car", "-s", "office", "--json"
    )
    assert code == 0, err
    hits = json.loads(out)
    assert hits[0]["heading"] == "Parking" and hits[0]["file_id"] == file_id
    code, out, _ = run_cli(monkeypatch, capsys, "docs", "ls", "-s", "office")
    assert out.startswith(f"{file_id}  completed")
    assert run_cli(monkeypatch, capsys, "docs", "rm", file_id)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "docs", "rm", file_id)
    assert code == 1 and "no file" in err
    code, _, err = run_cli(monkeypatch, capsys, "docs", "search", "x", "-s", "nowhere")
    assert code == 1 and "no vector store named 'nowhere'" in err


def test_kv_set_get_ls_rm(monkeypatch, capsys) -> None:
    assert run_cli(monkeypatch, capsys, "kv", "set", "city", '{"name": "Oslo"}')[0] == 0
    assert run_cli(monkeypatch, capsys, "kv", "set", "word", "plain")[0] == 0
    assert json.loads(run_cli(monkeypatch, capsys, "kv", "get", "city")[1]) == {"name": "Oslo"}
    assert run_cli(monkeypatch, capsys, "kv", "ls")[1].split() == ["city", "word"]
    assert run_cli(monkeypatch, capsys, "kv", "rm", "city")[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "kv", "get", "city")
    assert code == 1 and "no key" in err
