"""The machine the figures came from: its CPU, what is installed on it, and whether it was busy."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_description() -> str:
    """The CPU's model name, core count and vector extensions: figures from different machines differ
    by far more than the floors' margins (this project's VM has been both an AVX2-only Zen 3 and a Zen 4
    with AVX-512 VNNI), so every report says which it ran on."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    extensions = ", ".join(f for f in wanted if f in flags) or "none of AVX2/AVX-512"
    return f"{name}, {os.cpu_count()} logical CPUs, {extensions}"


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
