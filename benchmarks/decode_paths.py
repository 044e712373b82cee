"""Decode and prefill speed of every weight format, on the real model, in one run.

For each `EngineConfig.weight_format` this prints single-stream decode tok/s, prefill tok/s (one
512-token prompt), batch-32 aggregate decode tok/s, the bytes of weights one batch-1 decode step
reads, and what share of the measured memory bandwidth that is at the measured batch-1 speed.
Batch-1 decode streams every weight once per token, so that share says how close a path is to
its memory-bound ceiling; the rest is kernel inefficiency and per-op Python/dispatch overhead.

Every format's engine is loaded first and the measurements then rotate through them, round after
round, reporting medians: on a shared machine, load that comes and goes then hits all alike.

    python benchmarks/decode_paths.py [--path model.gguf] [--threads 2] [--formats int8 int4]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams

DEFAULT_PATH = Path(".cache/test-models/SmolLM2-135M-Instruct.Q4_1.gguf")
FORMATS = ["float32", "bfloat16", "int8", "int4", "auto"]


def memory_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of reading a large fp32 tensor (a sum: read-only, like a GEMV's weight stream)."""
    x = torch.ones(int(gib * 2**30) // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / min(times)


def make_engine(path: Path, weight_format: str, threads: int) -> LLMEngine:
    kwargs: dict = {"num_threads": threads, "max_num_batched_tokens": 512}
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    if "weight_format" in names:
        kwargs["weight_format"] = weight_format
    if "enable_prefix_caching" in names:  # every repeat must really compute its prompt
        kwargs["enable_prefix_caching"] = False
    return LLMEngine.from_path(str(path), EngineConfig(**kwargs))


def prompt(engine: LLMEngine, n: int, salt: int) -> list[int]:
    """n token ids of ordinary text, the first one varied by `salt` so no two prompts share a prefix."""
    text = "The history of computing is a story of layers: hardware, operating systems, languages. "
    ids = engine.tokenizer.encode(text * (n // 8 + 1))[: n - 1]
    return [1000 + salt, *ids]


def decode_single(engine: LLMEngine, new_tokens: int, repeats: int) -> float:
    rates = []
    for r in range(repeats):
        params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
        first = None
        for _ in engine.stream(prompt(engine, 16, r), params):
            if first is None:
                first = time.perf_counter()
        rates.append((new_tokens - 1) / (time.perf_counter() - first))
    return statistics.median(rates)


def prefill(engine: LLMEngine, n: int, repeats: int) -> float:
    rates = []
    for r in range(repeats):
        params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
        start = time.perf_counter()
        engine.generate([prompt(engine, n, 100 + r)], params)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def decode_batch(engine: LLMEngine, batch: int, new_tokens: int, repeats: int) -> float:
    """Aggregate tok/s of `batch` streams decoding together, after their prompts are in the cache."""
    rates = []
    for r in range(repeats):
        params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
        for i in range(batch):
            engine.add(f"b{r}-{i}", prompt(engine, 16, 200 + batch * r + i), params)
        engine.step()  # the prefill step (all 32 prompts fit in one 512-token step)
        tokens, start = 0, time.perf_counter()
        while engine.has_unfinished_requests:
            tokens += len(engine.step())
        rates.append(tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def weight_bytes_per_token(engine: LLMEngine) -> int:
    model = engine.runner.model
    reader = getattr(model, "weight_bytes_per_token", None)
    if reader is not None:
        return reader()
    return sum(p.numel() * p.element_size() for p in model.parameters())  # fp32 engine of old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bandwidth = memory_bandwidth()
    print(
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{args.threads} threads; memory bandwidth (1 GiB sum) {bandwidth / 1e9:.1f} GB/s"
    )
    engines = {fmt: make_engine(args.path, fmt, args.threads) for fmt in args.formats}
    for engine in engines.values():  # warm-up
        list(engine.stream(prompt(engine, 16, 99), SamplingParams(max_tokens=4, temperature=0)))
    results: dict[str, dict[str, list[float]]] = {fmt: {"b1": [], "pre": [], "b32": []} for fmt in engines}
    for _ in range(args.repeats):
        for fmt, engine in engines.items():
            results[fmt]["b1"].append(decode_single(engine, args.new_tokens, 1))
            results[fmt]["pre"].append(prefill(engine, 512, 1))
            results[fmt]["b32"].append(decode_batch(engine, 32, args.new_tokens // 2, 1))
    header = f"{'format':>9} | {'B=1 tok/s':>9} | {'prefill 512':>11} | {'B=32 tok/s':>10} | "
    print(header + f"{'MB/token':>8} | {'% of bw':>7}")
    for fmt, engine in engines.items():
        single, pre, batched = (statistics.median(results[fmt][k]) for k in ("b1", "pre", "b32"))
        nbytes = weight_bytes_per_token(engine)
        share = nbytes * single / bandwidth * 100
        print(
            f"{fmt:>9} | {single:9.1f} | {pre:11.0f} | {batched:10.0f} | {nbytes / 1e6:8.1f} | {share:6.0f}%",
            flush=True,
        )


if __name__ == "__main__":
    main()
