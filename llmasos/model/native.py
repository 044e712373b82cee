"""The optional C++ CPU kernels (`csrc/*.cpp`, one module), compiled on first use and cached.

They need g++ (and ninja) and an AVX2+FMA CPU; torch's JIT extension builder compiles them once into
`~/.cache/llmasos/cpu_kernels/<key>` (`$XDG_CACHE_HOME` is honoured), and later loads take well under
a second. The key hashes the source, the flags, torch's version and the Python environment: venvs that
shared torch's one default folder rebuilt it in turn (a minute each) whenever they alternated. Where
they cannot be built or loaded, `cpu_kernels()` returns None and the model keeps its pure-torch paths.
`LLMASOS_NATIVE=0` turns them off (for A/B checks).

They are built for the CPU they run on: AVX2 + FMA everywhere, and where the CPU also has AVX-512 VNNI
(with BW and VL), the GEMMs use 512-bit vectors (16 rows a vector, csrc/row_vectors.h) and `vpdpwssd`,
which fuses each pair of int16 multiply-adds with their accumulation. The integer sums are exact either
way and every float step is the same per row, so both builds give the same results bit for bit; the
flags are part of the build key, so a venv moved to another CPU builds the variant that CPU runs.
`LLMASOS_NATIVE_ISA=avx2` forces the AVX2 build on a VNNI CPU (for A/B checks).

    python -m llmasos.model.native   # build now (`make setup` does), print whether they load
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = sorted(CSRC.glob("*.cpp"))  # cpu_kernels.cpp holds the module; the others its kernels
# -O3 and the ISA of the kernels' intrinsics; -fopenmp so at::parallel_for runs on torch's OpenMP pool
# (the libgomp torch already loaded, so thread counts set through torch apply); hidden visibility so
# the module exports its init function only, and two builds loaded in one process (A/B runs) cannot
# bind to each other's copies of shared template code.
CFLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-fvisibility=hidden"]
# The kernels test __AVX512VNNI__ (row_vectors.h, quant_gemm.cpp): F and BW give the 512-bit integer
# forms of the GEMMs, VL the 256-bit forms elsewhere, and with them the 32 vector registers.
VNNI_CFLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]
_VNNI_CPU_FLAGS = {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}


def native_enabled() -> bool:
    """False when the user turned the kernels off with LLMASOS_NATIVE=0."""
    return os.environ.get("LLMASOS_NATIVE", "1") not in ("0", "false", "no", "off")


def _cpu_has_avx2() -> bool:
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "DEFAULT", ...
    return capability.startswith("AVX")


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def kernel_isa() -> str:
    """The instruction set the kernels are built for here: "avx512vnni" or "avx2"."""
    forced = os.environ.get("LLMASOS_NATIVE_ISA", "").strip().lower()
    if forced not in ("", "avx2", "avx512vnni"):
        logger.warning("LLMASOS_NATIVE_ISA=%s is not avx2 or avx512vnni; ignoring it", forced)
        forced = ""
    if forced == "avx2":
        return "avx2"
    return "avx512vnni" if _cpu_flags() >= _VNNI_CPU_FLAGS else "avx2"


def compile_flags() -> list[str]:
    """The compiler flags of this CPU's build."""
    return CFLAGS + (VNNI_CFLAGS if kernel_isa() == "avx512vnni" else [])


def build_directory() -> Path:
    """Where this environment's build of these sources lives."""
    key = hashlib.sha256()
    for path in sorted(CSRC.iterdir()):  # headers included: an edit to any file gets a fresh folder
        if path.suffix in (".cpp", ".h"):
            key.update(path.name.encode())
            key.update(path.read_bytes())
    # The sources' folder too: torch rebuilds a folder whose build file names other source paths, so two
    # checkouts sharing one environment (and one folder) rebuilt it on every alternate load (~60 s).
    for part in (*compile_flags(), torch.__version__, sys.prefix, str(CSRC)):
        key.update(part.encode())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmasos" / "cpu_kernels"
    return root / key.hexdigest()[:16]


@functools.cache
def _load() -> ModuleType | None:
    if not _cpu_has_avx2():
        logger.info("native CPU kernels off: this CPU has no AVX2")
        return None
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        logger.info("native CPU kernels off: no C++ compiler")
        return None
    if shutil.which("ninja") is None:  # the `ninja` package's binary sits beside this Python
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        from torch.utils import cpp_extension

        directory = build_directory()
        directory.mkdir(parents=True, exist_ok=True)
        # torch guards a build with a `lock` file that a killed build leaves behind, and every later
        # load then waits on it forever (a server killed during its first build hung the next start).
        # An flock is released by the OS when its holder dies: every loader takes it first, so a
        # `lock` file found while holding it is a dead build's, and is removed.
        with open(directory / "llmasos-build.lock", "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            (directory / "lock").unlink(missing_ok=True)
            return cpp_extension.load(
                name="llmasos_cpu_kernels",
                build_directory=str(directory),
                sources=[str(path) for path in SOURCES],
                extra_cflags=compile_flags(),
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
    except Exception as exc:  # a failed build must leave the engine on its torch paths
        logger.warning("native CPU kernels unavailable (%s); using torch kernels", exc)
        return None


def cpu_kernels() -> ModuleType | None:
    """The compiled kernel module, or None where it is off, unbuildable or the CPU lacks AVX2."""
    return _load() if native_enabled() else None


if __name__ == "__main__":
    kernels = cpu_kernels()
    print(
        "native CPU kernels:",
        f"loaded ({kernel_isa()})" if kernels is not None else "unavailable (torch paths in use)",
    )
