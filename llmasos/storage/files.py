"""Private files and folders under $LLMASOS_HOME: every file 0600, every folder 0700, whatever the umask.

`mkdir(mode=0o700, parents=True)` gives the mode to the last folder only (the parents get the
umask's 0755), and a file opened with `open(path, "w")` is 0644 until someone remembers to chmod it.
Everything LLMasOS writes under its home goes through these helpers instead, so the modes hold from
the first byte and no one has to remember.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create `path` and each missing parent with mode 0700; returns `path`.

    Folders that already exist keep their mode (the user's home or /tmp is not ours to change)."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another thread or process
        os.chmod(folder, DIR_MODE)  # mkdir's mode is filtered by the umask
    return missing[0] if missing else path


def create_private(path: Path, *, exclusive: bool = False) -> int:
    """A file descriptor of `path` opened for writing, created 0600 (truncated if it exists)."""
    private_dir(Path(path).parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # a file that existed keeps its old mode through os.open
    return fd


def open_private(path: Path, mode: str = "wb") -> BinaryIO:
    """`open(path, mode)` for writing ("wb" or "w"), the file created 0600."""
    if mode not in ("wb", "w"):
        raise ValueError(f"open_private writes only ('wb' or 'w'), not {mode!r}")
    return os.fdopen(create_private(path), mode)


def touch_private(path: Path) -> Path:
    """Make sure `path` exists as a 0600 file without changing its content (e.g. before SQLite opens it)."""
    private_dir(Path(path).parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return Path(path)


def write_private(path: Path, data: bytes | str, *, sync_folder: bool = True) -> None:
    """Replace `path` with `data` atomically and durably: a 0600 temporary file beside it, fsynced,
    renamed over it, and (with `sync_folder`) the folder fsynced so the rename survives a power cut.
    Without it, a power cut may leave the previous complete version, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with os.fdopen(create_private(tmp, exclusive=True), "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    if not sync_folder:
        return
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def make_private(path: Path) -> Path:
    """Set 0600 on a file another program wrote (e.g. espeak-ng's WAV), 0700 on a folder."""
    os.chmod(path, DIR_MODE if Path(path).is_dir() else FILE_MODE)
    return Path(path)
