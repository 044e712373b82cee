"""A base model (no chat template, like gemma-3-270m) from the command line: `run` completes the prompt
as plain text and says so; `chat` says it falls back to the plain format. The tiny Gemma 3 written by
the test has no chat template, as the real one has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.library import ModelStore
from tests.helpers.cli import run_cli
from tests.helpers.tiny_gemma3 import write_tiny_gemma3_gguf


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = write_tiny_gemma3_gguf(tmp_path_factory.mktemp("base") / "tiny-base.gguf")
    return path


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, *args, stdin=stdin)

    return run


def test_run_completes_plain_text_on_a_base_model(cli, base_gguf: Path) -> None:
    assert not ModelStore().pull(str(base_gguf), name="tiny-base", progress=False).has_chat_template
    args = ("-m", "tiny-base", "--max-tokens", "6", "--temperature", "0")
    code, out, err = cli("run", *args, "hello world")
    assert code == 0, err
    assert "no chat template" in err and "plain text" in err
    code, raw_out, _ = cli("run", *args, "--raw", "hello world")
    assert code == 0 and out == raw_out and out.strip()  # the same completion as --raw


def test_chat_says_a_base_model_has_no_template(cli, base_gguf: Path, tiny: str) -> None:
    ModelStore().pull(str(base_gguf), name="tiny-base", progress=False)
    code, _, err = cli("chat", "-m", "tiny-base", stdin="/exit\n")
    assert code == 0 and "tiny-base has no chat template" in err and "'User: ...'" in err
    code, _, err = cli("chat", "-m", tiny, stdin="/exit\n")
    assert code == 0 and "no chat template" not in err  # the tiny llama brings its own
