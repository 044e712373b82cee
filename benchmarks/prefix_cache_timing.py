"""The prefix cache as a timing channel between apps: app B's time to first token on a prompt whose
start app A has just computed, beside the same prompt with nothing cached, on the real default model.

    .venv/bin/python benchmarks/prefix_cache_timing.py [--trials 15] [--prefix-words 300] [--model default]

Each trial draws a fresh random prefix (so no trial finds another's blocks) and measures, through the
system calls (no HTTP, so the network adds no noise):
- uncached: B's first request on the prefix;
- after A: A computes the prefix, then B asks with the same prefix (per-app cache: should equal uncached);
- A again: A asks a second time (its own cache: the speed-up that would leak if it were shared);
- shared, after C: C and D both opted in (`share_prefix_cache`); C computes, D asks.
Prints the median and p90 of each, and the ratios to uncached. If B's figure after A stays at the
uncached one while A's own second request and the shared pair are faster, the channel is closed by
default and open only where an operator opened it. The model must be in the library (`llmasos pull
default`) of $LLMASOS_HOME.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llmasos.config import EngineConfig
from llmasos.engine.sampling import SamplingParams
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.library.store import ModelStore
from llmasos.security.apps import App, AppRegistry

ENGINE: list = []  # the one engine, for its prefix-cache counters
WORDS = ("river", "stone", "market", "winter", "copper", "lantern", "orchard", "signal", "harbor", "meadow")


def make_syscalls(model: str) -> tuple[Syscalls, object]:
    from llmasos.engine.engine import LLMEngine

    path = ModelStore().model_path(model)
    engine = LLMEngine.from_path(str(path), EngineConfig())
    residency = ResidencyManager(1 << 40, lambda name: (engine, engine.runner.memory_bytes), lambda name: 0)
    apps = AppRegistry(Path(tempfile.mkdtemp()) / "state.db")  # the benchmark's apps, not the user's
    return Syscalls(Kernel(residency, KernelConfig(engine=EngineConfig())), apps), engine


def ttft(syscalls: Syscalls, app: App, model: str, prompt: str) -> tuple[float, int]:
    """Seconds from the system call to the first generated token, and the prompt tokens it found in
    the prefix cache (the engine's counter, read around the request)."""
    blocks = ENGINE[0].block_manager
    hits = blocks.num_prefix_hits
    started = time.perf_counter()
    process = syscalls.generate(app, model, prompt, SamplingParams(max_tokens=1, temperature=0))
    for _event in syscalls.events(app, process.pid, timeout=120):
        return time.perf_counter() - started, blocks.num_prefix_hits - hits
    raise RuntimeError("no token came")


def trial(syscalls: Syscalls, apps: dict[str, App], model: str, rng: random.Random, words: int) -> dict:
    prefix = " ".join(rng.choice(WORDS) for _ in range(words)) + ". "
    shared = " ".join(rng.choice(WORDS) for _ in range(words)) + ". "
    uncached = ttft(syscalls, apps["b"], model, prefix + "Question one?")
    other = " ".join(rng.choice(WORDS) for _ in range(words)) + ". "
    ttft(syscalls, apps["a"], model, other + "Question two?")
    after_a = ttft(syscalls, apps["b"], model, other + "Question three?")
    a_again = ttft(syscalls, apps["a"], model, other + "Question four?")
    ttft(syscalls, apps["c"], model, shared + "Question five?")
    shared_after_c = ttft(syscalls, apps["d"], model, shared + "Question six?")
    return {
        "uncached": uncached,
        "B after A": after_a,
        "A again": a_again,
        "D after C (shared)": shared_after_c,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--prefix-words", type=int, default=300)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    syscalls, engine = make_syscalls(args.model)
    ENGINE.append(engine)
    apps = {
        "a": App("alice"),
        "b": App("bob"),
        "c": App("carol", share_prefix_cache=True),
        "d": App("dave", share_prefix_cache=True),
    }
    for name, app in apps.items():
        apps[name] = syscalls.apps.create(app)
    syscalls.start()
    try:
        rng = random.Random(0)
        ttft(syscalls, apps["b"], args.model, "warm up the model")
        results: dict[str, list[float]] = {}
        cached: dict[str, int] = {}
        for _ in range(args.trials):
            for key, (seconds, hits) in trial(syscalls, apps, args.model, rng, args.prefix_words).items():
                results.setdefault(key, []).append(seconds * 1e3)
                cached[key] = cached.get(key, 0) + hits
    finally:
        syscalls.stop()
    base = statistics.median(results["uncached"])
    print(f"{args.model}, {args.trials} trials, {args.prefix_words}-word prefixes, {args.threads} threads")
    header = ("time to first token", "median ms", "p90 ms", "/ uncached", "cached tok/req")
    print(f"{header[0]:<22} {header[1]:>10} {header[2]:>8} {header[3]:>10} {header[4]:>15}")
    for key, values in results.items():
        values.sort()
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        median = statistics.median(values)
        per_request = cached[key] / args.trials
        print(f"{key:<22} {median:>10.1f} {p90:>8.1f} {median / base:>10.2f} {per_request:>15.0f}")


if __name__ == "__main__":
    main()
