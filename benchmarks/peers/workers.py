"""One engine per process: the parent spawns a worker for each, the worker measures its figures."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .engines import LlamaCppPeer, LLMasOSPeer, TransformersPeer
from .figures import (
    fig_bandwidth,
    fig_concurrent,
    fig_prefill,
    fig_shared_prefix,
    fig_single_stream,
    fig_suspend,
    warm_up,
)
from .workload import Workload

# The script a worker runs: the benchmark's entry point, with `--worker NAME`.
ENTRY_POINT = Path(__file__).resolve().parents[1] / "engine_vs_peers.py"
# A worker named COLD + engine only loads that engine, after dropping its files from the page cache.
COLD = "cold:"


def run_worker(
    name: str, model: Path, args: argparse.Namespace, wl: Workload, prompts: dict[str, list[int]]
) -> dict:
    """Measure one engine (or the bandwidth) in this process."""
    notes: list[str] = []
    result: dict[str, Any] = {"notes": notes}
    threads = args.threads
    if name == "bandwidth":
        import torch

        torch.set_num_threads(threads)
        result.update(fig_bandwidth())
        return result
    cold = name.startswith(COLD)
    name = name.removeprefix(COLD)
    # The engine's libraries are imported (and LLMasOS's C++ kernels loaded) before the load is timed:
    # a server imports them once, and each model load after that is what a swap costs. Reported apart.
    start = time.perf_counter()
    import_engine(name)
    result["import_s"] = time.perf_counter() - start
    if cold:
        dropped = drop_pages(model, *(llmasos_caches(model) if name == "llmasos" else []))
        if not dropped:
            notes.append("cold load: no file's pages could be dropped; it is a warm load")
    start = time.perf_counter()
    if name == "llmasos":
        peer: Any = LLMasOSPeer(model, threads, engine_options(args.engine_option), notes)
    elif name.startswith("llamacpp"):
        peer = LlamaCppPeer(model, threads, name)
    elif name == "transformers":
        peer = TransformersPeer(model, threads)
    else:
        raise ValueError(f"unknown worker {name!r}")
    result["load_s"] = time.perf_counter() - start
    # Ready to serve a request: LLMasOS's engine holds its KV pool once constructed; llama.cpp needs a
    # context (its KV cache and compute buffers) too, which its `load_s` does not include.
    result["ready_s"] = result["load_s"] + getattr(peer, "context_s", 0.0)
    result["rss_after_load_bytes"] = _status_bytes("VmRSS")
    if cold:  # the load is the figure
        return result
    warm_up(peer, prompts)
    figures: dict[str, Callable[[], Any]] = {"single": lambda: fig_single_stream(peer, prompts, wl)}
    for b in wl.batch_sizes:
        figures[f"b{b}"] = lambda b=b: fig_concurrent(peer, prompts, wl, b)
    figures["prefill"] = lambda: fig_prefill(peer, prompts, wl)
    if name == "llmasos":
        skip = {s.strip() for s in args.skip.split(",")}
        if "shared_prefix" not in skip:
            figures["shared_prefix"] = lambda: fig_shared_prefix(peer, prompts, wl)
        if "suspend" not in skip:
            figures["suspend"] = lambda: fig_suspend(peer, prompts, notes)
        figures["weight_bytes"] = peer.weight_bytes
    for key, figure in figures.items():
        t = time.perf_counter()
        try:
            result[key] = figure()
        except Exception as exc:  # one broken figure must not lose the others
            notes.append(f"{key} failed: {type(exc).__name__}: {exc}")
        print(f"  [{name}] {key}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        if key == "prefill":
            # The peak over the figures every engine runs: the suspend and shared-prefix figures
            # that follow run on LLMasOS only (three 2,048-token contexts, a swap space), so the
            # whole run's peak is no same-work comparison.
            result["peak_rss_common_bytes"] = peak_rss_bytes()
    return result


def llmasos_caches(model: Path) -> list[Path]:
    """LLMasOS's packed model cached beside the GGUF file (packed_cache.py), where there is one."""
    from llmasos.model.packed_cache import cache_path

    path = cache_path(model)
    return [path] if path.is_file() else []


def drop_pages(*paths: Path) -> int:
    """Evict each file's pages from the page cache (its clean, unmapped ones: what a cold load reads from
    disk); how many files it was done for."""
    done = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)  # dirty pages are not dropped: a cache just written must reach the disk first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            done += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return done


def engine_options(pairs: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` strings as EngineConfig keyword arguments; values read as JSON when they parse
    (numbers, true/false), else kept as strings (weight_format=int8)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--engine-option wants FIELD=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def import_engine(name: str) -> None:
    """Import what the engine `name` runs on."""
    if name == "llmasos":
        import llmasos.engine.engine  # noqa: F401  (torch with it)
        from llmasos.model.native import cpu_kernels

        cpu_kernels()
    elif name.startswith("llamacpp"):
        import llama_cpp  # noqa: F401
    elif name == "transformers":
        import transformers  # noqa: F401


def peak_rss_bytes() -> int:
    """This process's own peak RSS. Not `ru_maxrss`: Linux carries it across exec from the forked
    parent, so every worker reported at least the parent's peak (one figure, 2,602 MB, for every
    engine); VmHWM is the high-water mark of this program's own memory."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int:
    """A `kB` field of /proc/self/status in bytes; 0 where there is none (not Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def spawn_worker(name: str, model: Path, prompts: Path, args: argparse.Namespace) -> dict:
    """Run one worker in a fresh interpreter; its JSON result, or a note on why there is none."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            sys.executable,
            str(ENTRY_POINT),
            "--worker",
            name,
            "--model",
            str(model),
            "--result",
            out.name,
        ]
        cmd += ["--prompts", str(prompts)]
        cmd += ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        cmd += ["--skip", args.skip]
        for option in args.engine_option:
            cmd += ["--engine-option", option]
        # Same thread count for every library's pools, whatever reads which variable.
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, env=env, check=False)
        text = Path(out.name).read_text()
    if proc.returncode != 0 or not text:
        return {"notes": [f"{name}: worker exited with {proc.returncode}"]}
    return json.loads(text)
