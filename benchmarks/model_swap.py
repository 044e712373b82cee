"""Two models under a memory budget that holds only one: how long a request for the evicted one waits.

The residency manager (kernel/residency.py) loads model A, then a request for model B evicts A (the
budget holds one); the figure is the time from the next request for A to its first token: A's load
(from its packed cache, as every load after the first) plus a short prompt's prefill and first token.
llama.cpp does the same on the same file: `Llama(path)` (memory-mapped) and the same prompt's first
token. Every load reads a file the page cache already holds (each was loaded once before timing).

    PYTHONPATH=. .venv/bin/python benchmarks/model_swap.py A.gguf B.gguf [--rounds 3] [--threads 2]

Each round swaps A out and back in; medians over rounds. llama.cpp (llama-cpp-python) is optional.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path

import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.kernel.residency import ResidencyManager
from llmasos.model.tokenizer import Tokenizer

PROMPT = "What is the capital of France?"
FIRST_TOKEN = SamplingParams(max_tokens=1, temperature=0)


def first_token(engine: LLMEngine) -> None:
    ids = engine.tokenizer.encode_chat([{"role": "user", "content": PROMPT}])
    engine.generate([ids], FIRST_TOKEN)


def ours(paths: dict[str, Path], config: EngineConfig, rounds: int) -> tuple[list[float], list[float]]:
    """(request-to-first-token seconds of the evicted model, its load seconds), per round."""
    sizes: dict[str, int] = {}

    def load(name: str) -> tuple[LLMEngine, int]:
        engine = LLMEngine.from_path(str(paths[name]), config)
        return engine, engine.memory_bytes

    def estimate(name: str) -> int:
        return sizes.get(name, 0)

    for name in paths:  # measure each once (this also writes the packed caches and warms the page cache)
        engine, sizes[name] = load(name)
        first_token(engine)
        del engine
        gc.collect()
    budget = int(max(sizes.values()) * 1.2)  # one model, never two
    if sum(sizes.values()) <= budget:
        raise SystemExit("the two models fit one budget together; pick two of similar size")
    manager = ResidencyManager(budget, load, estimate)
    a, b = list(paths)
    waits, loads = [], []
    for _ in range(rounds):
        for name in (b, a):  # B evicts A, then the request for A
            start = time.perf_counter()
            engine = manager.acquire(name)
            first_token(engine)
            manager.release(name)
            gc.collect()
        waits.append(time.perf_counter() - start)
        loads.append(manager.models[a].load_seconds)
        assert manager.num_evictions >= 1 and list(manager.models) == [a]
    return waits, loads


def llamacpp(path: Path, ids: list[int], threads: int, rounds: int) -> list[float] | None:
    """Seconds from `Llama(path)` to the first token of the same prompt ids, per round; None without
    llama.cpp."""
    try:
        import llama_cpp
    except ImportError:
        return None
    times = []
    for _ in range(rounds + 1):  # the first warms the page cache, as ours did
        start = time.perf_counter()
        llm = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=threads, verbose=False)
        next(iter(llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0)))
        times.append(time.perf_counter() - start)
        del llm
        gc.collect()
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the model that is evicted and asked for again")
    parser.add_argument("b", type=Path, help="the model that evicts it")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = EngineConfig(num_threads=args.threads)
    load_before = os.getloadavg()[0]
    waits, loads = ours({"A": args.a, "B": args.b}, config, args.rounds)
    ids = Tokenizer.from_gguf(args.a).encode_chat([{"role": "user", "content": PROMPT}])
    theirs = llamacpp(args.a, ids, args.threads, args.rounds)
    print(f"A = {args.a.name}, B = {args.b.name}, {args.threads} threads, {args.rounds} rounds (medians)")
    print(
        f"LLMasOS: request for evicted A -> first token {statistics.median(waits):.2f} s "
        f"(load {statistics.median(loads):.2f} s); rounds {[round(w, 2) for w in waits]}"
    )
    if theirs is None:
        print("llama.cpp: not installed (benchmarks/install_peers.sh)")
    else:
        ratio = statistics.median(waits) / statistics.median(theirs)
        print(
            f"llama.cpp: load A -> first token {statistics.median(theirs):.2f} s; "
            f"rounds {[round(t, 2) for t in theirs]}; LLMasOS / llama.cpp {ratio:.2f}x"
        )
    print(f"1-minute load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
