"""`llmasos chat`'s own commands (never sent to the model), the token-limit marker, and, in a
pseudo-terminal as a user types: a multi-line paste as one turn, Ctrl-C during an answer, history."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    def run(*args: str, stdin: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, *args, stdin=stdin)

    return run


def user(text: str) -> dict:
    return {"role": "user", "content": text}


GREEDY = ("--temperature", "0")


def test_help_is_answered_here_and_not_sent_to_the_model(cli, tiny, reference) -> None:
    code, out, err = cli("chat", "-m", tiny, "--max-tokens", "4", *GREEDY, "-v", stdin="/help\nHello\n")
    assert code == 0, err
    assert "/system TEXT" in err and "/save FILE" in err
    # One generation only, and its prompt is "Hello" alone: /help never reached the model.
    prompt_sizes = [int(line.split()[0].strip("[")) for line in err.splitlines() if "prompt tokens" in line]
    assert prompt_sizes == [reference([user("Hello")], 4)[1]]
    assert out == f">>> >>> {reference([user('Hello')], 4)[0]}\n>>> "


def test_system_sets_the_system_prompt_and_save_writes_the_conversation(
    cli, tiny, reference, tmp_path: Path
) -> None:
    saved = tmp_path / "talk.json"
    code, out, err = cli(
        "chat", "-m", tiny, "--max-tokens", "4", *GREEDY, stdin=f"/system Be brief.\nHello\n/save {saved}\n"
    )
    assert code == 0, err
    system = {"role": "system", "content": "Be brief."}
    answer, _ = reference([system, user("Hello")], 4)
    assert out == f">>> >>> {answer}\n>>> >>> "
    assert json.loads(saved.read_text()) == [system, user("Hello"), {"role": "assistant", "content": answer}]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert f"saved 3 messages to {saved}" in err


def test_an_answer_cut_at_max_tokens_is_marked(cli, tiny) -> None:
    code, _, err = cli("chat", "-m", tiny, "--max-tokens", "2", *GREEDY, "--seed", "1", stdin="Hello\n")
    assert code == 0, err
    assert "[stopped: token limit]" in err


def test_unknown_and_incomplete_commands_say_what_to_do(cli, tiny) -> None:
    code, out, err = cli("chat", "-m", tiny, stdin="/frobnicate\n/save\n")
    assert code == 0, err
    assert "unknown command '/frobnicate'; /help lists them" in err
    assert "/save needs a file name" in err
    assert out == ">>> >>> >>> "  # nothing was answered
