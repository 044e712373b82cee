"""The habits a user brings from other CLIs (Ollama, git): `-h`, `--version`, top-level model verbs,
did-you-mean for mistyped commands and names."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from tests.helpers.cli import run_cli


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("COLUMNS", "200")  # rich tables and help: no wrapping in assertions
    return lambda *args: run_cli(monkeypatch, capsys, *args)


@pytest.mark.parametrize(
    "words",
    [(), ("models",), ("models", "show"), ("apps", "create"), ("run",), ("chat",), ("call",), ("audit",)],
)
def test_dash_h_is_help_everywhere(cli, words: tuple[str, ...]) -> None:
    code_h, out_h, _ = cli(*words, "-h")
    code_long, out_long, _ = cli(*words, "--help")
    assert code_h == 0 and code_long == 0
    assert "Usage:" in out_h and out_h == out_long


def test_version_prints_the_installed_version(cli) -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"llmasos {version('llmasos')}"


def test_help_lists_the_top_level_verbs_as_aliases(cli) -> None:
    _, out, _ = cli("--help")
    for verb in ("pull", "list", "show", "rm"):
        assert f"Alias of `llmasos models {verb}`" in out


def test_top_level_verbs_do_what_the_models_verbs_do(cli, tiny_gguf) -> None:
    code, out, err = cli("pull", str(tiny_gguf), "--name", "tiny", "-q")
    assert code == 0, err
    assert out.startswith("tiny: llama")
    # The table says when the model was pulled in words ("just now", "1 s ago"), which can differ
    # between two runs a second apart: the JSON is compared whole, the table by what it lists.
    assert json.loads(cli("list", "--json")[1]) == json.loads(cli("models", "list", "--json")[1])
    code, out, _ = cli("list")
    assert code == 0 and "tiny" in out
    assert cli("show", "tiny", "--json") == cli("models", "show", "tiny", "--json")
    assert json.loads(cli("list", "--json")[1])[0]["name"] == "tiny"
    code, out, _ = cli("rm", "tiny")
    assert code == 0 and out.strip() == "removed tiny"
    assert json.loads(cli("models", "list", "--json")[1]) == []


@pytest.mark.parametrize(("typed", "meant"), [("lsit", "list"), ("pul", "pull"), ("caht", "chat")])
def test_unknown_command_names_the_closest(cli, typed: str, meant: str) -> None:
    code, _, err = cli(typed)
    assert code == 2
    assert f"did you mean '{meant}'?" in err.lower()


def test_model_names_are_matched_whatever_their_case(cli, tiny) -> None:
    code, out, err = cli("models", "show", "TINY", "--json")
    assert code == 0, err
    assert json.loads(out)["name"] == "tiny"
    code, out, err = cli("run", "-m", "Tiny", "--max-tokens", "2", "Hello")
    assert code == 0, err
    assert out.strip()


@pytest.mark.parametrize(
    "args",
    [
        ("models", "show", "tinny"),
        ("models", "rm", "tinny"),
        ("show", "tiney"),
        ("run", "-m", "tinny", "Hello"),
        ("call", "summarize", "-m", "tinny", "Some text to sum up."),
    ],
)
def test_an_unknown_model_name_offers_the_closest(cli, tiny, args: tuple[str, ...]) -> None:
    code, out, err = cli(*args)
    assert code == 1 and out == ""
    assert "did you mean 'tiny'?" in err and err.count("\n") == 1


def test_an_unknown_service_name_offers_the_closest(cli, tiny) -> None:
    code, _, err = cli("call", "sumarize", "-m", "tiny", "Some text to sum up.")
    assert code == 1
    assert "no service or tool named 'sumarize'; did you mean 'summarize'?" in err


def test_param_given_as_text_where_an_array_is_wanted_says_how_to_write_it(cli, tiny) -> None:
    code, out, err = cli("call", "classify", "-m", "tiny", "-p", "labels=a,b", "hello there")
    assert code == 1 and out == ""
    assert """write it as -p labels='["a", "b"]'""" in err


def test_param_given_as_json_is_sent_as_json(cli, tiny) -> None:
    code, out, err = cli("call", "classify", "-m", "tiny", "-p", 'labels=["alpha","beta"]', "--json", "hi")
    assert code == 0, err
    assert json.loads(out)["output"] in ("alpha", "beta")


def test_param_help_shows_the_json_form(cli) -> None:
    _, out, _ = cli("call", "--help")
    assert "VALUE is JSON when it parses" in out
