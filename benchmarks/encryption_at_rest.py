"""Encryption at rest on the default model: what `models pull --encrypt` costs at pull, at load and in
a chat, against the same model stored in the clear, measured in the same run.

    PYTHONPATH=. .venv/bin/python benchmarks/encryption_at_rest.py [--repeats 5] [--max-tokens 32]

With a fresh LLMASOS_HOME, pulls the default model's GGUF twice (plain and `--encrypt`), loads each
once to build its packed int4 cache (plain beside the plain model, sealed beside the sealed one), then
alternates cached loads and a greedy chat on each, `--repeats` times. Prints medians: pull time, first
load, cached load (the goal: encrypted within 10% of plain), chat latency, and the sealed cache's
decryption throughput. One torch thread (the shared machine's noise is smaller).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = ROOT / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MESSAGES = [{"role": "user", "content": "Explain what a CPU does in one sentence."}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="llmasos-bench-enc-"))
    os.environ["LLMASOS_HOME"] = str(home)
    os.environ.pop("LLMASOS_MASTER_KEY", None)

    import torch

    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine
    from llmasos.engine.sampling import SamplingParams
    from llmasos.library.store import ModelStore
    from llmasos.model.packed_cache import cache_path
    from llmasos.security.sealed_file import decrypt_file

    try:
        from llmasos.security.sealed_buffer import SealedBuffer
    except ImportError:  # older trees: only the one-chunk-at-a-time reader
        SealedBuffer = None

    torch.set_num_threads(1)
    store = ModelStore()
    pull = {}
    for name, encrypt in (("plain", False), ("sealed", True)):
        start = time.perf_counter()
        store.pull(str(args.gguf), name=name, encrypt=encrypt, progress=False)
        pull[name] = time.perf_counter() - start
    paths = {name: str(store.model_path(name)) for name in pull}
    config = EngineConfig()
    greedy = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)

    def load(name: str) -> tuple[LLMEngine, float]:
        start = time.perf_counter()
        engine = LLMEngine.from_path(paths[name], config)
        return engine, time.perf_counter() - start

    first = {name: load(name)[1] for name in paths}
    loads: dict[str, list[float]] = {n: [] for n in paths}
    chats: dict[str, list[float]] = {n: [] for n in paths}
    answers: dict[str, str] = {}
    for _ in range(args.repeats):
        for name in paths:
            engine, seconds = load(name)
            loads[name].append(seconds)
            prompt = engine.tokenizer.encode_chat(MESSAGES)
            start = time.perf_counter()
            ((text, _),) = engine.generate([prompt], greedy)
            chats[name].append(time.perf_counter() - start)
            answers[name] = text
            del engine
    sealed_cache = cache_path(Path(paths["sealed"]))
    start = time.perf_counter()
    size = decrypt_file(sealed_cache, io.BytesIO().write)
    decrypt_s = time.perf_counter() - start
    # What a cached load does (packed_cache.py), where the in-memory reader exists: every thread
    # reads and decrypts its chunks in place.
    in_memory_s = None
    if SealedBuffer is not None:
        start = time.perf_counter()
        with SealedBuffer(sealed_cache) as buffer:
            buffer.wait()
        in_memory_s = time.perf_counter() - start

    median = {
        k: {n: statistics.median(v) for n, v in d.items()} for k, d in (("load", loads), ("chat", chats))
    }
    result = {
        "model": args.gguf.name,
        "repeats": args.repeats,
        "pull_s": pull,
        "first_load_s": first,
        "cached_load_s": median["load"],
        "cached_load_overhead": median["load"]["sealed"] / median["load"]["plain"] - 1,
        "chat_s": median["chat"],
        "chat_overhead": median["chat"]["sealed"] / median["chat"]["plain"] - 1,
        "same_answer": answers["plain"] == answers["sealed"],
        "sealed_cache_mb": size / 1e6,
        "decrypt_mb_per_s": size / 1e6 / decrypt_s,
        "in_memory_decrypt_mb_per_s": in_memory_s and size / 1e6 / in_memory_s,
        "all_loads_s": loads,
    }
    print(f"{'':14}{'plain':>10}{'encrypted':>12}")
    for label, key in (("pull", "pull_s"), ("first load", "first_load_s"), ("cached load", "cached_load_s")):
        print(f"{label:14}{result[key]['plain']:>9.3f}s{result[key]['sealed']:>11.3f}s")
    chat = median["chat"]
    print(f"{'chat':14}{chat['plain']:>9.3f}s{chat['sealed']:>11.3f}s  ({args.max_tokens} tokens)")
    print(
        f"cached load overhead {result['cached_load_overhead']:+.1%}, chat {result['chat_overhead']:+.1%}; "
        f"sealed cache {result['sealed_cache_mb']:.0f} MB decrypted at "
        f"{result['decrypt_mb_per_s']:.0f} MB/s one chunk at a time"
        + (
            f", {result['in_memory_decrypt_mb_per_s']:.0f} MB/s in place on every core (the load's path)"
            if in_memory_s
            else ""
        )
        + "; "
        f"same answer: {result['same_answer']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
