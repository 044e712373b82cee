"""The C heap's free pages handed back to the OS, for the loaders here and the engine above."""

from __future__ import annotations

import ctypes


def trim_heap() -> None:
    """glibc's `malloc_trim`: the C heap's free pages go back to the OS (no garbage collection).

    Why: tensors and parse buffers below glibc's mmap threshold (which rises to 32 MB once large blocks
    are freed) live in the heap, and freeing them leaves their pages resident until a trim."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return
    trim(0)
