"""Load time and memory of one GGUF file: LLMasOS against llama.cpp, each load in a fresh process.

Each round starts one process per engine (alternating); a process imports its engine's libraries (timed
apart), loads the file (timed: what a server that swaps models pays), generates 8 greedy tokens of a
short prompt, and reports its RSS after the load and its peak RSS (VmHWM). Medians over the rounds,
after one untimed round that warms the page cache (and writes LLMasOS's packed cache if it is missing).

    PYTHONPATH=. .venv/bin/python benchmarks/model_load.py MODEL.gguf [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time

def status_bytes(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))

engine, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if engine == "llmasos":
    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine
    from llmasos.engine.sampling import SamplingParams
    from llmasos.model.native import cpu_kernels
    cpu_kernels()
else:
    import llama_cpp
imported = time.perf_counter() - start
start = time.perf_counter()
if engine == "llmasos":
    model = LLMEngine.from_path(path, EngineConfig(num_threads=2))
    loaded, rss = time.perf_counter() - start, status_bytes("VmRSS")
    ids = model.tokenizer.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    model.generate([ids], SamplingParams(max_tokens=8, temperature=0))
else:
    model = llama_cpp.Llama(path, n_ctx=2048, n_threads=2, verbose=False)
    loaded, rss = time.perf_counter() - start, status_bytes("VmRSS")
    ids = model.tokenize(b"What is the capital of France?")
    for i, _ in enumerate(model.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0)):
        if i == 7:
            break
peak = status_bytes("VmHWM")
print(json.dumps({"import_s": imported, "load_s": loaded, "rss_after_load": rss, "peak_rss": peak}))
"""
ENGINES = ("llmasos", "llamacpp")


def measure(engine: str, path: str) -> dict | None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, engine, path], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"{engine} failed: {done.stderr[-1000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .gguf file")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {engine: [] for engine in ENGINES}
    for round_number in range(args.rounds + 1):
        for engine in ENGINES:
            result = measure(engine, args.model)
            if result is not None and round_number > 0:
                results[engine].append(result)
    medians = {
        engine: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for engine, rounds in results.items()
        if rounds
    }
    for engine, m in medians.items():
        loads = [round(r["load_s"], 2) for r in results[engine]]
        print(
            f"{engine:9} import {m['import_s']:.2f} s, load {m['load_s']:.2f} s {loads}, RSS after load "
            f"{m['rss_after_load'] / 1e6:,.0f} MB, peak RSS {m['peak_rss'] / 1e6:,.0f} MB"
        )
    if len(medians) == 2:
        ours, theirs = medians["llmasos"], medians["llamacpp"]
        print(
            f"LLMasOS / llama.cpp: load {ours['load_s'] / theirs['load_s']:.2f}x (goal <= 2), "
            f"peak RSS {ours['peak_rss'] / theirs['peak_rss']:.2f}x (goal <= 1.3)"
        )


if __name__ == "__main__":
    main()
