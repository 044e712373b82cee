"""Where a process's resident memory lies: /proc/self/smaps summed by kind of mapping.

Each mapping is put in one row: the C heap (brk), each shared library group's file pages (torch's,
numpy's, ...), the model's files, the engine's own tensors (found by address: the KV pool, the swap
chunks, the weights), thread stacks, and the remaining anonymous memory (malloc arenas and large
`mmap`s: torch's CPU tensors, the tokenizer's Rust heap, Python's object arenas). Rss counts every
page the process can touch; `shared` is the part of it that is file pages clean and shareable with
other processes (a second process mapping the same library pays nothing for them).
"""

from __future__ import annotations

import ctypes
import os
from collections import defaultdict
from dataclasses import dataclass, field

# Shared objects grouped by the package they come from (first match wins), so the table says which
# import maps what.
LIBRARY_GROUPS = (
    ("torch", ("/torch/", "/torch.libs/", "libgomp", "libtorch", "libc10")),
    ("numpy", ("/numpy/", "/numpy.libs/", "libopenblas", "libscipy_openblas")),
    ("tokenizers", ("/tokenizers/",)),
    ("llmasos kernels", ("llmasos_cpu", "llmasos_kernels", "torch_extensions")),
    ("sympy/other site-packages", ("site-packages",)),
    ("python + libc", ("/python", "libpython", "/lib/", "/usr/lib", "/lib64/", "ld-linux")),
)


@dataclass
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    fields: dict[str, int] = field(default_factory=dict)  # kB

    @property
    def rss_kb(self) -> int:
        return self.fields.get("Rss", 0)

    @property
    def shared_clean_kb(self) -> int:
        return self.fields.get("Shared_Clean", 0)


def read_smaps(path: str = "/proc/self/smaps") -> list[Mapping]:
    """Every mapping of a process, with its kB fields (Rss, Pss, Shared_Clean, Anonymous, ...)."""
    mappings: list[Mapping] = []
    with open(path) as smaps:
        for line in smaps:
            head, _, rest = line.partition(" ")
            if "-" in head and not head.endswith(":"):
                parts = line.split(maxsplit=5)
                start, end = (int(x, 16) for x in parts[0].split("-"))
                mappings.append(Mapping(start, end, parts[1], parts[5].strip() if len(parts) > 5 else ""))
            elif head.endswith(":") and rest.strip().endswith("kB"):
                mappings[-1].fields[head[:-1]] = int(rest.split()[0])
    return mappings


@dataclass(frozen=True)
class KnownRegion:
    """A range of addresses our code owns (a tensor's storage), named for the table."""

    name: str
    start: int
    nbytes: int


def classify(mapping: Mapping, regions: list[KnownRegion], model_files: tuple[str, ...]) -> str:
    """The table row of one mapping."""
    # Python's anonymous mmap (the KV pool's) is a shared one, which smaps names after /dev/zero.
    path = "" if mapping.path.startswith("/dev/zero") else mapping.path
    if path == "[heap]":
        return "anon: C heap (brk: malloc's main arena)"
    if path.startswith("[stack"):
        return "anon: main thread stack"
    if path.startswith("["):
        return "kernel ([vdso], [vvar], ...)"
    if path and any(path.startswith(f) for f in model_files):
        return f"file: model {os.path.basename(path)}"
    if path:
        for group, needles in LIBRARY_GROUPS:
            if any(n in path for n in needles):
                return f"file: {group} (.so and data)"
        return "file: other"
    for region in regions:
        overlaps = mapping.start < region.start + region.nbytes and region.start < mapping.end
        if overlaps:
            return f"anon: {region.name}"
    size_kb = (mapping.end - mapping.start) // 1024
    if mapping.perms.startswith("---"):
        return "anon: guard pages"
    if size_kb in (8188, 8192):  # glibc's default thread stack (the 8 MiB rlimit), less its guard page
        return "anon: thread stacks (8 MiB maps)"
    return "anon: other (malloc arenas, large mmaps: torch tensors, Rust heap)"


def breakdown(regions: list[KnownRegion], model_files: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{row: {"rss": kB, "shared": kB}} of this process now."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: {"rss": 0, "shared": 0})
    for mapping in read_smaps():
        row = rows[classify(mapping, regions, model_files)]
        row["rss"] += mapping.rss_kb
        row["shared"] += mapping.shared_clean_kb
    return dict(rows)


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def malloc_summary() -> dict[str, int]:
    """glibc's own view (bytes): the main arena's size, bytes in use and free in it, and bytes in its
    own `mmap`ed blocks. Free bytes in the arena are resident until `malloc_trim` returns them. Empty
    where there is no glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    return {"arena": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def reset_peak_rss() -> bool:
    """Start VmHWM afresh at the present RSS (Linux 4.0+: `clear_refs` 5), so that the next reading of
    VmHWM is the peak within what ran since; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0
