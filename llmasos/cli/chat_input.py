"""How `llmasos chat` reads a turn: in a terminal through prompt_toolkit (line editing, the arrow keys,
history kept in `$LLMASOS_HOME/chat_history` (0600), and a pasted block of several lines is one turn);
from a pipe or a file with plain `input()`, one line a turn, so scripts and tests drive it as before."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.storage.files import create_private

PROMPT = ">>> "


def history_path() -> Path:
    """Where the chat's input history is kept (private to the user, as everything under the home)."""
    return llmasos_home() / "chat_history"


def line_reader() -> Callable[[], str]:
    """A function that reads one turn (EOFError at the end of input, KeyboardInterrupt on Ctrl-C)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return lambda: input(PROMPT)
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    path = history_path()
    if not path.exists():  # FileHistory would create it with the umask's mode: private first
        os.close(create_private(path))
    # Single-line editing (Enter sends), while a bracketed paste inserts its newlines into the line:
    # a pasted paragraph is one turn, not one turn a line.
    session: PromptSession[str] = PromptSession(history=FileHistory(str(path)))
    return lambda: session.prompt(PROMPT)
