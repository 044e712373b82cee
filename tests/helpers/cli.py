"""Run the `llmasos` command in-process, as a user would from a shell, and capture what it prints."""

from __future__ import annotations

import io
import sys

import pytest

from llmasos.cli.main import main


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    """`llmasos ARGS` with `stdin` as its standard input; (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["llmasos", *args])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
