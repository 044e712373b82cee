"""Where LLMasOS's resident memory goes, stage by stage, on the default model (issue 23's peak RSS).

One fresh interpreter imports, loads and runs the figures of `engine_vs_peers.py` (the same workload,
through the same `LLMasOSPeer`); after each stage it sums `/proc/self/smaps` by kind of mapping
(`peers/rss.py`: the C heap, each library group's file pages, the model's file, the KV pool, the swap
chunks, thread stacks, other anonymous memory) and prints one table, MB per stage, with the peak
(VmHWM) and glibc's own count of free heap bytes. `shared` is the part of a row that is clean file
pages, which other processes mapping the same files share.

    .venv/bin/python benchmarks/rss_breakdown.py [--model default|PATH.gguf] [--threads 2] [--quick]
                                                 [--engine-option FIELD=VALUE] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.rss import KnownRegion, breakdown, malloc_summary, reset_peak_rss, status_kb


class Stages:
    """RSS by row after each named stage."""

    def __init__(self, model_file: str, trace_python: bool) -> None:
        self.model_files = (model_file,)  # the GGUF and anything beside it named after it (its cache)
        self.rows: list[tuple[str, dict[str, dict[str, int]], dict[str, Any]]] = []
        self.engine: Any = None
        self.trace_python = trace_python
        self.modules = set(sys.modules)
        self.peak_so_far = 0
        self.resets_peak = False

    def record(self, stage: str) -> None:
        regions = self._regions()
        stage_peak = status_kb("VmHWM")  # since the last stage's reset, where the kernel allows one
        self.peak_so_far = max(self.peak_so_far, stage_peak)
        extra: dict[str, Any] = {
            "VmRSS": status_kb("VmRSS"),
            "VmHWM": self.peak_so_far,
            "stage_peak": stage_peak if self.resets_peak else None,
            "malloc": malloc_summary(),
            "threads": status_kb("Threads"),
        }
        new = sorted({m.split(".")[0] for m in set(sys.modules) - self.modules})
        self.modules = set(sys.modules)
        extra["new_top_modules"] = new
        if self.trace_python:
            import tracemalloc

            extra["python_traced_kb"] = tracemalloc.get_traced_memory()[0] // 1024
        if self.engine is not None:
            runner, blocks = self.engine.runner, self.engine.block_manager
            extra["weights_kb"] = runner.weight_bytes // 1024
            extra["kv_touched_kb"] = blocks.num_touched_blocks * runner.kv_block_bytes // 1024
            extra["kv_pool_kb"] = runner.kv_cache_bytes // 1024
            swap = runner.swap_space
            extra["swap_kb"] = swap.num_blocks * swap.bytes_per_block // 1024
        self.rows.append((stage, breakdown(regions, self.model_files), extra))
        print(f"  {stage}: {extra['VmRSS'] / 1024:.0f} MB", file=sys.stderr, flush=True)
        # After the smaps walk: the next stage's peak is its own (the table's reading is not in it).
        self.resets_peak = reset_peak_rss()

    def _regions(self) -> list[KnownRegion]:
        if self.engine is None:
            return []
        runner = self.engine.runner
        regions = [KnownRegion("KV pool (touched pages)", runner.kv_cache.data_ptr(), runner.kv_cache_bytes)]
        for chunk in runner.swap_space.chunks:
            regions.append(KnownRegion("swap chunks", chunk.data_ptr(), chunk.numel() * chunk.element_size()))
        seen: set[int] = set()
        for tensor in _model_tensors(runner.model):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen and storage.nbytes() >= 1 << 20:
                seen.add(storage.data_ptr())
                regions.append(KnownRegion("weights (own maps)", storage.data_ptr(), storage.nbytes()))
        return regions


def _model_tensors(model: Any) -> list[Any]:
    """Every tensor the model holds: parameters, buffers, and tensors kept as plain attributes of its
    modules (the packed int4 layers keep theirs outside the parameters)."""
    import torch

    found = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        found += [v for v in vars(module).values() if isinstance(v, torch.Tensor)]
    return found


def measure(args: argparse.Namespace) -> list[tuple[str, dict, dict]]:
    """The stages, in this process."""
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    stages = Stages(args.model, args.tracemalloc)
    stages.record("start")
    import numpy  # noqa: F401

    stages.record("numpy")
    import torch

    torch.set_num_threads(args.threads)
    stages.record("torch")
    import llmasos.engine.engine  # noqa: F401

    stages.record("engine imports")
    from llmasos.model.native import cpu_kernels

    cpu_kernels()
    stages.record("C++ kernels")
    from peers.engines import LLMasOSPeer
    from peers.figures import (
        fig_concurrent,
        fig_prefill,
        fig_shared_prefix,
        fig_single_stream,
        fig_suspend,
        warm_up,
    )
    from peers.workers import engine_options
    from peers.workload import Workload, build_prompts

    wl = Workload.quick() if args.quick else Workload()
    notes: list[str] = []
    peer = LLMasOSPeer(Path(args.model), args.threads, engine_options(args.engine_option), notes)
    stages.engine = peer.engine
    stages.record("loaded")
    prompts = build_prompts(peer.engine.tokenizer, wl)
    warm_up(peer, prompts)
    stages.record("warm-up")
    fig_single_stream(peer, prompts, wl)
    stages.record("B=1")
    for b in wl.batch_sizes:
        fig_concurrent(peer, prompts, wl, b)
        stages.record(f"B={b}")
    fig_prefill(peer, prompts, wl)
    stages.record("prefill")
    fig_shared_prefix(peer, prompts, wl)
    stages.record("prefix")
    fig_suspend(peer, prompts, notes)
    stages.record("suspend")
    if args.tracemalloc:
        import tracemalloc

        top = tracemalloc.take_snapshot().statistics("lineno")[:12]
        print("\nlargest live Python allocations (tracemalloc):")
        for stat in top:
            print(f"  {stat.size / 2**20:7.1f} MB  {stat.traceback}")
    return stages.rows


def print_table(rows: list[tuple[str, dict, dict]]) -> None:
    """MB per row (rows) after each stage (columns); the last column is the shared part at the end."""
    names = [stage for stage, _, _ in rows]
    kinds: list[str] = []
    for _, table, _ in rows:
        kinds += [k for k in table if k not in kinds]
    kinds.sort(key=lambda k: -max(t.get(k, {"rss": 0})["rss"] for _, t, _ in rows))
    width = max(len(k) for k in kinds) + 2
    header = "".join(f"{n[:9]:>10}" for n in names)
    print("\nRSS by mapping, MB after each stage (`shared` = clean file pages, at the end)\n")
    print(f"{'':{width}}{header}{'shared':>10}")
    for kind in kinds:
        cells = "".join(f"{t.get(kind, {'rss': 0})['rss'] / 1024:10.1f}" for _, t, _ in rows)
        shared = rows[-1][1].get(kind, {"shared": 0})["shared"] / 1024
        print(f"{kind:{width}}{cells}{shared:10.1f}")

    def line(label: str, values: list[float]) -> None:
        print(f"{label:{width}}" + "".join(f"{v:10.1f}" for v in values))

    print()
    line("VmRSS", [e["VmRSS"] / 1024 for _, _, e in rows])
    line("VmHWM (peak so far)", [e["VmHWM"] / 1024 for _, _, e in rows])
    if all(e.get("stage_peak") is not None for _, _, e in rows[1:]):
        line("peak within the stage", [(e.get("stage_peak") or e["VmHWM"]) / 1024 for _, _, e in rows])
    line("  of which clean file pages", [sum(r["shared"] for r in t.values()) / 1024 for _, t, _ in rows])
    line("malloc: main arena size", [e["malloc"].get("arena", 0) / 2**20 for _, _, e in rows])
    line("malloc: free in arenas", [e["malloc"].get("free", 0) / 2**20 for _, _, e in rows])
    line("malloc: own mmapped blocks", [e["malloc"].get("mmapped", 0) / 2**20 for _, _, e in rows])
    for key, label in (
        ("weights_kb", "engine: weights held"),
        ("kv_touched_kb", "engine: KV blocks touched"),
        ("swap_kb", "engine: swap chunks"),
        ("python_traced_kb", "tracemalloc: Python objects"),
    ):
        if any(key in e for _, _, e in rows):
            line(label, [e.get(key, 0) / 1024 for _, _, e in rows])
    line("threads", [e["threads"] for _, _, e in rows])
    print("\nmodules first imported at each stage (top-level packages):")
    for stage, _, extra in rows:
        mods = [m for m in extra["new_top_modules"] if not m.startswith("_")]
        if mods:
            print(f"  {stage}: {', '.join(mods)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a library model name, or a .gguf path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the peers benchmark's --quick workload")
    parser.add_argument("--engine-option", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--tracemalloc", action="store_true", help="also count Python's own allocations")
    parser.add_argument("--json", type=Path, help="write every stage's rows to this file")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.measure:  # the measured process: prints its rows as JSON on stdout's last line
        rows = measure(args)
        print(json.dumps(rows))
        return
    # The measured process is a fresh interpreter: this one has imported the library to find the model.
    model = Path(args.model).expanduser()
    if not model.is_file():
        from llmasos.library.store import ModelStore

        store = ModelStore()
        store.pull(args.model, progress=False)
        model = store.model_path(args.model)
    cmd = [sys.executable, __file__, "--measure", "--model", str(model), "--threads", str(args.threads)]
    cmd += ["--quick"] * args.quick + ["--tracemalloc"] * args.tracemalloc
    for option in args.engine_option:
        cmd += ["--engine-option", option]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    *text, last = out.rstrip("\n").split("\n")
    print("\n".join(text))
    rows = json.loads(last)
    print_table(rows)
    print(f"\n({time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
