"""LLMasOS against its peers: llama.cpp (as shipped and re-quantized) and Hugging Face transformers.

One run measures every engine on the same GGUF file with the same thread count and the same token ids,
then prints one table with the ratios LLMasOS ÷ peer next to the floors the engine must meet:

- single-stream decode tok/s (128 new tokens after a short prompt; first token to last);
- aggregate decode tok/s with 8 and 32 concurrent sequences (~32-token prompts, 128 new tokens each);
- prompt processing tok/s of a 1,024-token prompt (from time to first token);
- LLMasOS only: time to first token of 32 requests sharing a 512-token system prompt (prefix cache);
- LLMasOS only: suspend + resume of a 2,048-token context in each mode;
- LLMasOS only: batch-1 decode as a share of the measured memory-bandwidth limit;
- peak RSS of each engine;
- load time, cold and warm: before each engine's worker, a worker of its own loads the engine once after
  dropping the model file's pages (and LLMasOS's packed cache beside it) from the page cache
  (posix_fadvise DONTNEED: a first load after boot, or after other work evicted it); the engine's worker
  then loads from the warm page cache (a swap back to a recently used model).

Each engine runs in its own subprocess (this script again, with `--worker`) so that peak RSS is each
engine's own and no engine's threads, caches or allocator state colour another's numbers. The parent
only orchestrates: it fetches the model, re-quantizes it for llama.cpp, starts workers, prints.

llama.cpp is driven through llama-cpp-python's low-level API, the way a batching server drives it: one
context with `n_seq_max = B`, one `llama_batch` per step holding one token per sequence, each with its
own seq id. Its high-level `Llama` class serves one sequence at a time and would understate it.

    .venv/bin/python benchmarks/engine_vs_peers.py [--threads 2] [--quick] [--only llmasos,llamacpp]
                                                   [--requant Q8_0] [--engine-option FIELD=VALUE]
                                                   [--rounds N] [--json out.json]

Peers are optional: `benchmarks/install_peers.sh` installs llama-cpp-python; a peer that is not
installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from .engines import requantize
from .machine import cpu_description, installed
from .ratios import add_ranges, merge_rounds, ratio_medians, summarize
from .report import print_report
from .workers import COLD, engine_options, peak_rss_bytes, run_worker, spawn_worker
from .workload import Workload, build_prompts

PEERS = ("llmasos", "llamacpp", "transformers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument("--quick", action="store_true", help="fewer tokens and requests: a smoke run")
    parser.add_argument(
        "--only", default=",".join(PEERS), help=f"comma-separated subset of {', '.join(PEERS)}"
    )
    parser.add_argument(
        "--requant",
        default="Q8_0",
        help="comma-separated llama.cpp re-quantizations to compare besides the shipped file "
        "(e.g. Q8_0,BF16,F16; empty for none)",
    )
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an EngineConfig field for LLMasOS, e.g. weight_format=int8 (repeatable; default: the "
        "engine's defaults, with prefix caching on)",
    )
    parser.add_argument(
        "--rounds",
        "--repeats",
        dest="rounds",
        type=int,
        default=1,
        help="run every engine this many times, engines alternating, and report each figure's median "
        "and range per engine and each ratio's median and range over the rounds (a round takes ~4 "
        "minutes; --quick ~1.5)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated LLMasOS-only figures not to run (shared_prefix, suspend): on Qwen2.5-1.5B "
        "the suspend figure alone took 6 minutes of a loaded machine, so repeats of the shared figures fit",
    )
    parser.add_argument("--json", type=Path, help="write every measurement and ratio to this file")
    parser.add_argument(
        "--model",
        default="default",
        help="a model of the library by name (pulled if missing), or a .gguf file's path "
        "(default: the default model); every engine runs this same file",
    )
    # Internal: one engine in this process (the parent starts these, with --model the file's path).
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"--rounds wants a positive number of rounds, got {args.rounds}")
    wl = Workload.quick() if args.quick else Workload()
    if args.worker:
        run_as_worker(args, wl)
        return
    model = fetch_model(args)
    only = chosen_peers(args)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="llmasos-peers-") as tmp:
        prompts = Path(tmp) / "prompts.json"
        prompts.write_text(json.dumps(build_prompts(_tokenizer(model), wl)))
        workers = plan_workers(model, only, Path(tmp), args)
        rounds = run_rounds(workers, prompts, args)
    note_busy_machine(load_before, args)
    results = merge_rounds(rounds)
    add_ranges(results, rounds)
    per_round = [summarize(r, wl, args.same_file) for r in rounds]
    summary, spread = ratio_medians(per_round)
    print_report(results, summary, wl, args, spread if args.rounds > 1 else None)
    if args.json:
        write_json(args, wl, results, summary, spread, rounds, per_round)


def run_as_worker(args: argparse.Namespace, wl: Workload) -> None:
    """`--worker NAME`: measure one engine in this process and write its result where the parent reads it."""
    prompts = json.loads(args.prompts.read_text())
    result = run_worker(args.worker, Path(args.model), args, wl, prompts)
    result["peak_rss_bytes"] = peak_rss_bytes()
    args.result.write_text(json.dumps(result))


def fetch_model(args: argparse.Namespace) -> Path:
    """The model's file (`--model`: a path, or a library name pulled if it is not there); sets the
    report's fields."""
    from llmasos.library.store import ModelStore

    model = Path(args.model).expanduser()
    if not model.is_file():
        store = ModelStore()
        store.pull(args.model, progress=False)  # a no-op when the model is already stored
        model = store.model_path(args.model)
    args.model_path, args.notes, args.machine = str(model), [], cpu_description()
    args.same_file = None  # the llama.cpp worker on LLMasOS's own file, once one is started
    engine_options(args.engine_option)  # a malformed option fails now, not after the peers ran
    return model


def chosen_peers(args: argparse.Namespace) -> list[str]:
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(only) - set(PEERS)
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}")
    return only


def _tokenizer(model: Path):  # -> llmasos Tokenizer, imported here: only the parent loads it
    from llmasos.model.tokenizer import Tokenizer

    return Tokenizer.from_gguf(model)


def plan_workers(model: Path, only: list[str], tmp: Path, args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(worker name, model file) of every engine to run, in order; a peer not installed gets a note."""
    workers: list[tuple[str, Path]] = []
    if "llmasos" in only:
        workers += [("llmasos", model), ("bandwidth", model)]
        # Built now if this environment has no build yet (~1 min, once), so that the workers' load
        # times are loads, not a compile: one such round made a 2-round median 42.6 s, not ~4.
        from llmasos.model.native import cpu_kernels, kernel_isa

        kernels = cpu_kernels()
        isa = kernel_isa() if kernels is not None else "off (torch paths)"
        args.machine += f"; LLMasOS kernels: {isa}"
    if "llamacpp" in only:
        if installed("llama_cpp"):
            workers += llamacpp_workers(model, tmp, args)
        else:
            args.notes.append(
                "llama.cpp skipped: llama-cpp-python not installed (benchmarks/install_peers.sh)"
            )
    if "transformers" in only:
        if installed("transformers") and installed("accelerate"):
            workers.append(("transformers", model))
        else:
            args.notes.append("transformers skipped: transformers and accelerate not installed")
    return workers


def llamacpp_workers(model: Path, tmp: Path, args: argparse.Namespace) -> list[tuple[str, Path]]:
    """llama.cpp on the shipped file, then on each `--requant` re-quantization of it (made here, in `tmp`)."""
    shipped = model.stem.rsplit(".", 1)[-1] if "." in model.stem else "as shipped"
    workers = [(f"llamacpp:{shipped}", model)]
    args.same_file = f"llamacpp:{shipped}"
    for ftype in filter(None, (f.strip().upper() for f in args.requant.split(","))):
        dst = tmp / f"{model.stem}.{ftype}.gguf"
        try:
            seconds = requantize(model, dst, ftype, args.threads)
        except (RuntimeError, AttributeError) as exc:
            args.notes.append(f"llama.cpp re-quantization to {ftype} failed: {exc}")
            continue
        args.notes.append(f"re-quantized to {ftype} in {seconds:.2f} s ({dst.stat().st_size / 1e6:.0f} MB)")
        workers.append((f"llamacpp:{ftype}", dst))
    return workers


def run_rounds(
    workers: list[tuple[str, Path]], prompts: Path, args: argparse.Namespace
) -> list[dict[str, dict]]:
    """Every worker once per round, each round's results by worker name.

    Engines alternate within each round, so a slow spell of this machine (timings here moved by up to
    25% between back-to-back runs) lands on every engine of a round, not on one engine."""
    rounds: list[dict[str, dict]] = []
    for number in range(args.rounds):
        if args.rounds > 1:
            print(f"round {number + 1} of {args.rounds}", file=sys.stderr, flush=True)
        results: dict[str, dict] = {}
        for name, path in workers:
            cold = None if name == "bandwidth" else spawn_worker(COLD + name, path, prompts, args)
            results[name] = spawn_worker(name, path, prompts, args)
            if cold is not None:
                results[name]["load_cold_s"] = cold.get("load_s")
                results[name].setdefault("notes", []).extend(cold.get("notes", []))
        rounds.append(results)
    return rounds


def note_busy_machine(load_before: float, args: argparse.Namespace) -> None:
    """A note when other work shared the cores.

    Other work on the cores wrecks these figures, llama.cpp's most: its threads spin at barriers, and
    one preempted thread stalls the rest (batched decode fell tenfold with a build running). A rough
    check: the load average after the run includes our own workers' threads."""
    load_after = os.getloadavg()[0]
    if load_before > 0.5 or load_after > args.threads + 0.5:
        args.notes.append(
            f"the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} after); "
            "rerun on an idle machine before trusting these numbers"
        )


def write_json(
    args: argparse.Namespace,
    wl: Workload,
    results: dict,
    summary: dict,
    spread: dict,
    rounds: list[dict],
    per_round: list[dict],
) -> None:
    args.json.write_text(
        json.dumps(
            {
                "workload": dataclasses.asdict(wl),
                "threads": args.threads,
                "machine": args.machine,
                "results": results,
                "ratios": summary,
                "ratio_ranges": spread,
                "rounds": rounds,
                "ratios_per_round": per_round,
                "notes": args.notes,
            },
            indent=1,
        )
    )
