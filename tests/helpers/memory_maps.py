"""Which of this process's mappings holds an address (Linux's /proc/self/maps)."""

from __future__ import annotations


def mapping_of(address: int) -> str:
    """The path of the mapping holding `address`: a file's path, or "" or "/dev/zero" for anonymous
    memory (Python's anonymous `mmap` shows as the latter)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return fields[5] if len(fields) > 5 else ""
    raise AssertionError(f"address {address:#x} is in no mapping")
