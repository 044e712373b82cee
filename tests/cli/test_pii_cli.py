"""`llmasos pii scan FILE` and `llmasos apps create/update --pii`, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli

LETTER = "Dear Mr. Oskar Lindqvist,\nyour card 4539015112830369 is blocked. Call 079 2718 1155.\n"


def test_scan_lists_types_and_places_and_hides_values_unless_asked(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    letter = tmp_path / "letter.txt"
    letter.write_text(LETTER)
    code, out, err = run_cli(monkeypatch, capsys, "pii", "scan", str(letter))
    assert code == 0
    assert "2:11\tCREDIT_CARD\t16 chars" in out and "PERSON" in out
    assert "4539015112830369" not in out and "Lindqvist" not in out
    assert "CREDIT_CARD 1" in err and "PHONE_NUMBER 1" in err
    code, out, _ = run_cli(monkeypatch, capsys, "pii", "scan", "-", "--json", "--show-values", stdin=LETTER)
    entities = json.loads(out)["entities"]
    assert {"type": "PERSON", "value": "Oskar Lindqvist"}.items() <= next(
        e for e in entities if e["type"] == "PERSON"
    ).items()


def test_scan_of_a_missing_or_binary_file_says_what_to_do(monkeypatch, capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "pii", "scan", str(tmp_path / "nope.txt"))
    assert code == 1 and "no file" in err and "Traceback" not in err
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    code, _, err = run_cli(monkeypatch, capsys, "pii", "scan", str(binary))
    assert code == 1 and "not UTF-8 text" in err


def test_apps_create_and_update_set_the_policy_per_direction(monkeypatch, capsys) -> None:
    code, _, _ = run_cli(monkeypatch, capsys, "apps", "create", "clinic", "--pii", "pseudonymize")
    assert code == 0
    code, _, err = run_cli(monkeypatch, capsys, "apps", "update", "clinic", "--pii", "audit=redact")
    assert code == 0 and "prompts=pseudonymize" in err and "audit=redact" in err
    _, out, _ = run_cli(monkeypatch, capsys, "apps", "show", "clinic", "--json")
    assert json.loads(out)["pii"] == {
        "prompts": "pseudonymize",
        "outputs": "pseudonymize",
        "documents": "pseudonymize",
        "audit": "redact",
    }
    code, _, _ = run_cli(monkeypatch, capsys, "apps", "update", "clinic", "--pii", "block")
    _, out, _ = run_cli(monkeypatch, capsys, "apps", "show", "clinic")
    assert code == 0 and "prompts=block outputs=redact documents=block audit=redact" in out


def test_a_bad_policy_is_a_one_line_error(monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "apps", "create", "x", "--pii", "prompts=hide")
    assert code == 1 and "prompts takes off, pseudonymize, redact, block" in err
    code, _, err = run_cli(monkeypatch, capsys, "apps", "update", "nobody", "--pii", "redact")
    assert code == 1 and "no app named 'nobody'" in err
