"""Digests of model files and folders, and a streaming copy that hashes as it writes.

A folder's digest is reproducible from a shell: it is the sha256 of the text that
`sha256sum FILE...` prints for its files in sorted order of their relative POSIX paths, i.e.
`cd FOLDER && sha256sum $(printf '%s\\n' FILES | LC_ALL=C sort) | sha256sum`. Each line is
`<hex digest>  <relative path>\\n`, so renaming or swapping files changes the digest as well as
changing their bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from llmasos.storage.files import open_private

CHUNK = 1 << 20  # 1 MiB: large enough to make hashing I/O-bound, small enough for a smooth bar


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_of_digests(file_digests: dict[str, str]) -> str:
    """A folder's digest from its files' digests ({relative path: hex sha256}); see the module doc."""
    lines = "".join(f"{file_digests[rel]}  {rel}\n" for rel in sorted(file_digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def folder_digest(folder: Path, files: Iterable[str]) -> str:
    """Hex sha256 over `sha256sum`-style lines of `files` (relative paths), sorted by path."""
    return digest_of_digests({rel: file_sha256(folder / rel) for rel in files})


def _open_private(dst: Path) -> BinaryIO:
    """Create `dst` (and its folders) 0600/0700 from the start: no window where it is world-readable."""
    return open_private(dst, "wb")


@contextmanager
def byte_progress(label: str, total: int | None, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich bar of bytes and speed on stderr (stdout stays clean for `--json`); yields `advance(n)`."""
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def copy_into(src: BinaryIO, out: BinaryIO, digest: Any, advance: Callable[[int], None]) -> int:
    """Stream `src` to the end of `out`, feeding `digest`; returns the bytes copied."""
    written = 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        out.write(chunk)
        written += len(chunk)
        advance(len(chunk))
    return written


def copy_stream(
    src: BinaryIO, dst: Path, *, total: int | None, label: str, progress: bool = True
) -> tuple[str, int]:
    """Copy `src` into a new private file `dst`, returning (hex sha256, bytes written), with a
    progress bar when `progress`."""
    digest = hashlib.sha256()
    with _open_private(dst) as out, byte_progress(label, total, enabled=progress) as advance:
        written = copy_into(src, out, digest, advance)
    return digest.hexdigest(), written


def copy_file(src: Path, dst: Path, *, label: str, progress: bool = True) -> tuple[str, int]:
    """Copy one file into the store privately, returning (hex sha256, bytes written)."""
    with open(src, "rb") as f:
        return copy_stream(f, dst, total=src.stat().st_size, label=label, progress=progress)
