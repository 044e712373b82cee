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


def run_worker(
    name: str, model: Path, args: argparse.Namespace, wl: Workload, prompts: dict[str, list[int]]
) -> dict:
    """Measure one engine (or the bandwidth) in this process."""
    notes: list[str] = []
    result: dict[str, Any] = {"notes": notes}
    threads = args.threads
    start = time.perf_counter()
    if name == "bandwidth":
        import torch

        torch.set_num_threads(threads)
        result.update(fig_bandwidth())
        return result
    if name == "llmasos":
        peer: Any = LLMasOSPeer(model, threads, engine_options(args.engine_option), notes)
    elif name.startswith("llamacpp"):
        peer = LlamaCppPeer(model, threads, name)
    elif name == "transformers":
        peer = TransformersPeer(model, threads)
    else:
        raise ValueError(f"unknown worker {name!r}")
    result["load_s"] = time.perf_counter() - start
    warm_up(peer, prompts)
    figures: dict[str, Callable[[], Any]] = {"single": lambda: fig_single_stream(peer, prompts, wl)}
    for b in wl.batch_sizes:
        figures[f"b{b}"] = lambda b=b: fig_concurrent(peer, prompts, wl, b)
    figures["prefill"] = lambda: fig_prefill(peer, prompts, wl)
    if name == "llmasos":
        figures["shared_prefix"] = lambda: fig_shared_prefix(peer, prompts, wl)
        figures["suspend"] = lambda: fig_suspend(peer, prompts, notes)
        figures["weight_bytes"] = peer.weight_bytes
    for key, figure in figures.items():
        t = time.perf_counter()
        try:
            result[key] = figure()
        except Exception as exc:  # one broken figure must not lose the others
            notes.append(f"{key} failed: {type(exc).__name__}: {exc}")
        print(f"  [{name}] {key}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    return result


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


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


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
