"""`llmasos run` and `llmasos chat` end to end through `llmasos.cli.main.main`, on the tiny model pulled
into the test's own LLMASOS_HOME, with no server running: they answer from a kernel in this process.
Expected replies come from an engine of the test's own (`reference`), so the CLI is checked for what
it generates from which prompt, not only for printing something."""

from __future__ import annotations

import re

import pytest

from tests.helpers.cli import run_cli


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `llmasos ARGS` in-process with `stdin` as its standard input; (exit status, stdout, stderr)."""

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, *args, stdin=stdin)

    return run


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# ---- run ----------------------------------------------------------------------------------------


def test_run_prints_the_greedy_answer_and_is_deterministic(cli, tiny, reference) -> None:
    args = ("run", "-m", tiny, "--max-tokens", "5", "--temperature", "0", "Hello")
    code, out, err = cli(*args)
    assert code == 0, err
    expected, _ = reference([user("Hello")], 5)
    assert expected.strip()
    assert out == expected + "\n"
    assert cli(*args)[:2] == (0, out)


def test_run_raw_sends_the_prompt_without_the_chat_template(cli, tiny, reference) -> None:
    code, out, err = cli("run", "-m", tiny, "--max-tokens", "6", "--temperature", "0", "--raw", "Hello")
    assert code == 0, err
    raw, _ = reference("Hello", 6)
    assert out == raw + "\n"
    assert raw != reference([user("Hello")], 6)[0]  # the template really changes what the model sees


def test_run_system_prompt_goes_into_the_template(cli, tiny, reference) -> None:
    code, out, err = cli(
        "run", "-m", tiny, "--max-tokens", "6", "--temperature", "0", "--system", "Be brief.", "Hello"
    )
    assert code == 0, err
    messages = [{"role": "system", "content": "Be brief."}, user("Hello")]
    assert out == reference(messages, 6)[0] + "\n"


def test_run_dash_reads_the_prompt_from_stdin(cli, tiny) -> None:
    args = ("run", "-m", tiny, "--max-tokens", "5", "--temperature", "0")
    code, from_stdin, err = cli(*args, "-", stdin="Where is the user?")
    assert code == 0, err
    code, from_arg, err = cli(*args, "Where is the user?")
    assert code == 0, err
    assert from_stdin == from_arg
    assert from_stdin != cli(*args, "Hello")[1]  # the prompt really came from stdin


def test_run_verbose_prints_counts_to_stderr(cli, tiny, reference) -> None:
    code, out, err = cli("run", "-m", tiny, "--max-tokens", "5", "--temperature", "0", "--verbose", "Hello")
    assert code == 0, err
    expected, num_prompt_tokens = reference([user("Hello")], 5)
    assert out == expected + "\n"  # stdout is the answer alone
    pattern = r"\[(\d+) prompt tokens, (\d+) generated; first token \d+ ms; [\d.]+ tok/s; pid \d+\]"
    match = re.search(pattern, err)
    assert match, err
    assert int(match[1]) == num_prompt_tokens and int(match[2]) == 5


def test_run_seeded_sampling_is_reproducible(cli, tiny, reference) -> None:
    args = ("run", "-m", tiny, "--raw", "--max-tokens", "12", "--temperature", "3", "--seed")
    expected = {seed: reference("Hello", 12, temperature=3.0, seed=seed)[0] for seed in (5, 6)}
    assert expected[5] != expected[6]
    for seed in (5, 6, 5):
        code, out, err = cli(*args, str(seed), "Hello")
        assert code == 0, err
        assert out == expected[seed] + "\n"


def test_run_stop_string_cuts_the_answer(cli, tiny, reference) -> None:
    expected, _ = reference([user("Hello")], 8)
    stop = expected[3:5]
    cut = expected[: expected.find(stop)]
    code, out, err = cli(
        "run", "-m", tiny, "--max-tokens", "8", "--temperature", "0", "--stop", stop, "Hello"
    )
    assert code == 0, err
    assert out == cut + "\n"


def test_run_is_a_system_call_of_the_admin_app_written_to_the_audit_log(cli, tiny) -> None:
    from llmasos.security.audit import AuditLog

    code, _, err = cli("run", "-m", tiny, "--max-tokens", "3", "--temperature", "0", "Hello")
    assert code == 0, err
    rows = [r for r in AuditLog().query() if r["call"] == "chat" and r["outcome"] != "started"]
    assert len(rows) == 1
    row = rows[0]
    assert row["app"] == "admin" and row["target"] == "tiny" and row["outcome"] == "finished"
    assert row["tokens_out"] == 3 and row["interface"] == "cli"


def test_run_unknown_model_is_one_line_naming_models_pull(cli) -> None:
    code, out, err = cli("run", "-m", "no-such-model", "Hello")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "no-such-model" in err and "llmasos models pull" in err


@pytest.mark.parametrize(
    ("option", "value", "name"),
    [
        ("--temperature", "-1", "temperature"),
        ("--top-p", "0", "top_p"),
        ("--max-tokens", "0", "max_tokens"),
        ("--top-k", "-2", "top_k"),
    ],
)
def test_run_bad_sampling_value_exits_1_naming_it(cli, tiny, option: str, value: str, name: str) -> None:
    code, out, err = cli("run", "-m", tiny, option, value, "Hello")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and name in err


def test_run_prompt_over_the_context_window_exits_1_saying_so(cli, tiny) -> None:
    code, _, err = cli("run", "-m", tiny, "--raw", "Hello " * 300)
    assert code == 1
    assert err.count("\n") == 1 and "context window" in err and "shorten it by at least" in err


def test_run_non_numeric_option_is_a_usage_error(cli, tiny) -> None:
    code, out, err = cli("run", "-m", tiny, "--temperature", "hot", "Hello")
    assert code == 2
    assert "temperature" in err
    assert out == ""


# ---- chat ---------------------------------------------------------------------------------------


def test_chat_replies_resets_and_exits(cli, tiny, reference) -> None:
    code, out, err = cli(
        "chat",
        "-m",
        tiny,
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        stdin="Hello\n/reset\nHi again\n/exit\n",
    )
    assert code == 0, err
    first, _ = reference([user("Hello")], 5)
    second, _ = reference([user("Hi again")], 5)  # after /reset, the first exchange is forgotten
    assert out == f">>> {first}\n>>> >>> {second}\n>>> "
    assert "tiny" in err  # the banner goes to stderr


def test_chat_keeps_the_conversation_without_reset(cli, tiny, reference) -> None:
    code, out, err = cli(
        "chat", "-m", tiny, "--max-tokens", "5", "--temperature", "0", "-v", stdin="Hello\nHi again\n"
    )
    assert code == 0, err
    first, _ = reference([user("Hello")], 5)
    history = [user("Hello"), {"role": "assistant", "content": first}, user("Hi again")]
    second, history_tokens = reference(history, 5)
    assert out == f">>> {first}\n>>> {second}\n>>> "
    # The second turn's prompt is the whole conversation, not the last message alone.
    prompt_sizes = [int(line.split()[0].strip("[")) for line in err.splitlines() if "prompt tokens" in line]
    assert prompt_sizes[1] == history_tokens > reference([user("Hi again")], 5)[1]


def test_chat_leaves_cleanly_at_end_of_input(cli, tiny) -> None:
    code, out, err = cli("chat", "-m", tiny, "--max-tokens", "3", "--temperature", "0", stdin="")
    assert code == 0, err
    assert out == ">>> "
    assert err.endswith("\n") and "Traceback" not in err


def test_chat_skips_blank_lines(cli, tiny, reference) -> None:
    code, out, err = cli(
        "chat", "-m", tiny, "--max-tokens", "4", "--temperature", "0", stdin="\n   \nHello\n"
    )
    assert code == 0, err
    assert out == f">>> >>> >>> {reference([user('Hello')], 4)[0]}\n>>> "


def test_chat_unknown_model_exits_1(cli) -> None:
    code, _, err = cli("chat", "-m", "no-such-model", stdin="Hello\n")
    assert code == 1
    assert "llmasos models pull" in err
