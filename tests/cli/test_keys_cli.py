"""`llmasos models pull --encrypt` and `llmasos keys`: through the real command line, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmasos.security import master_key
from tests.helpers.cli import run_cli
from tests.helpers.tiny_model import write_tiny_gguf


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def test_pull_encrypted_then_rotate_and_a_wrong_key_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], llmasos_home: Path
) -> None:
    gguf, _ = write_tiny_gguf(tmp_path / "tiny.gguf")
    code, out, err = run_cli(
        monkeypatch, capsys, "models", "pull", str(gguf), "--name", "sealed", "--encrypt", "-q"
    )
    assert code == 0, err
    assert "encrypted" in out
    assert (llmasos_home / "models" / "sealed" / "tiny.gguf.enc").is_file()
    assert not (llmasos_home / "models" / "sealed" / "tiny.gguf").exists()
    code, out, _ = run_cli(monkeypatch, capsys, "keys", "status", "--json")
    before = json.loads(out)
    assert code == 0 and before["source"] == "file" and len(before["master_key_id"]) == 16
    code, out, err = run_cli(monkeypatch, capsys, "keys", "rotate")
    assert code == 0, err
    assert f"{before['master_key_id']} -> " in out and "1 encrypted model file" in out
    monkeypatch.setenv(master_key.ENV_VAR, master_key.encode_key(master_key.new_key()))
    code, out, err = run_cli(monkeypatch, capsys, "run", "-m", "sealed", "--max-tokens", "1", "hi")
    assert code == 1
    assert "wrapped under master key" in err and len(err.strip().splitlines()) == 1
