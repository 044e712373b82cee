"""The cluster on one machine: scaling over nodes, remote vs in-process, Ray's idle cost, failover and
prefix affinity, on the default model (SmolLM2-135M-Instruct), in one run.

A Ray cluster on loopback (`ray.cluster_utils.Cluster`: a head with no CPUs and nodes of one CPU, each
node's engine on one thread) is started by the script; nodes join through `join_node`, as `llmasos node
start` does. Prints:
- aggregate decode tok/s of 2 nodes (8 streams each) against 1 node (8 streams) — goal >= 1.6x;
- the same 8 streams on a remote engine against an in-process `LLMEngine` at one thread (both batch
  invariant, as nodes run) — goal <= 10%; with where the remote step's time goes: a no-op actor call's
  round trip and the pickled size of one step's output;
- Ray's idle memory (RSS of its processes) and CPU (share of one core over 10 s) before any engine;
- failover: 32 greedy streams over 2 nodes, one node killed mid-stream: completed, identical to an
  undisturbed run, and the added latency of the streams that moved;
- affinity: 8 apps' 3-turn chats over 2 nodes, arrivals shuffled each turn: prefix-cache hit rate and
  TTFT p50 with affinity placement against round robin.

`.venv/bin/python benchmarks/cluster_scaling.py [--tokens 64] [--streams 8]` (LLMASOS_HOME with the default
model pulled). The machine's load average is printed at the start and the end: on a shared 2-core box
two one-thread nodes only scale if the other core is free.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import time
from pathlib import Path

from llmasos.cluster.loopback import use_loopback

use_loopback(None)  # before Ray is imported: the cluster listens on 127.0.0.1 only

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from llmasos.cluster.calls import call  # noqa: E402
from llmasos.cluster.cluster_engine import ClusterEngine  # noqa: E402
from llmasos.cluster.runtime import NodeSpec, join_node, start_registry  # noqa: E402
from llmasos.config import EngineConfig  # noqa: E402
from llmasos.engine.engine import LLMEngine  # noqa: E402
from llmasos.engine.sampling import SamplingParams  # noqa: E402
from llmasos.library.store import ModelStore  # noqa: E402

MB = 2**20
SECRET = "benchmark-secret"
KV_BYTES = 96 * MB
MODEL = "smollm2-135m-instruct"


class OnlyNodes:
    """The registry, seen as if only `names` had joined (for the one-node runs)."""

    def __init__(self, directory, names: set[str]) -> None:
        self.directory, self.names = directory, names

    def engines(self, model: str):
        return [(n, h) for n, h in self.directory.engines(model) if n in self.names]

    def mark_dead(self, node: str, reason: str) -> None:
        self.directory.mark_dead(node, reason)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def prompts_for(tokenizer, n: int, seed: int = 0) -> list[list[int]]:
    topics = ["rivers", "volcanoes", "bread", "chess", "comets", "bees", "glass", "maps", "tides", "owls"]
    rng = random.Random(seed)
    return [
        tokenizer.encode(
            f"Question {i}: write three sentences about {rng.choice(topics)} and {rng.choice(topics)}."
        )
        for i in range(n)
    ]


def decode_rate(engine, prompts: list[list[int]], params: SamplingParams, tag: str) -> float:
    """Aggregate decode tok/s: tokens sampled after every stream has its first, over that time."""
    ids = [f"{tag}-{i}" for i in range(len(prompts))]
    for request_id, prompt in zip(ids, prompts, strict=True):
        engine.add(request_id, prompt, params)
    started: set[str] = set()
    live, tokens, begin = set(ids), 0, None
    while live:
        step = engine.step()
        for out in step:
            if begin is not None:
                tokens += len(out.token_ids)
            started.add(out.request_id)
            if out.finished:
                live.discard(out.request_id)
        if begin is None and started >= set(ids):
            begin = time.perf_counter()
    return tokens / (time.perf_counter() - begin)


def step_output_bytes(engine, prompts: list[list[int]], params: SamplingParams) -> int:
    """Pickled size of a decode step's output for `prompts` (what a node's step sends the head)."""
    import pickle

    ids = [f"size-{i}" for i in range(len(prompts))]
    for request_id, prompt in zip(ids, prompts, strict=True):
        engine.add(request_id, prompt, params)
    for _ in range(4):  # past the prefill
        step = engine.step()
    size = len(pickle.dumps(step, protocol=5))
    for request_id in ids:
        engine.abort(request_id)
    return size


def actor_round_trip_ms(directory, calls: int = 200) -> float:
    """Median round trip of a no-op call to node a's engine actor (`ping`)."""
    handle = next(h for n, h in directory.engines(MODEL) if n == "a")
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call(handle.ping.remote())
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def ray_processes() -> list[int]:
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(key in cmdline for key in ("gcs_server", "raylet", "ray/_private", "ray/dashboard", "ray::")):
            pids.append(int(entry.name))
    return pids


def rss_and_ticks(pids: list[int]) -> tuple[int, int]:
    rss = ticks = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss += next(
                int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS")
            )
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, StopIteration):
            continue
    return rss, ticks


def ray_idle_cost(seconds: float = 10.0) -> tuple[int, float, int]:
    pids = ray_processes()
    rss, before = rss_and_ticks(pids)
    time.sleep(seconds)
    _, after = rss_and_ticks(pids)
    return rss, (after - before) / os.sysconf("SC_CLK_TCK") / seconds, len(pids)


def run_streams(engine, prompts, params, tag: str, namespace: str, kill=None) -> dict:
    """Every prompt as a stream; `kill(engine)` is called once a stream on node b has 8 tokens. Returns
    each stream's text, token ids, finish time and the node it started on."""
    ids = [f"{tag}-{i}" for i in range(len(prompts))]
    for request_id, prompt in zip(ids, prompts, strict=True):
        engine.add(request_id, prompt, params, cache_namespace=namespace)
    first_node = {rid: engine.node_of(rid) for rid in ids}
    texts = dict.fromkeys(ids, "")
    tokens: dict[str, list[int]] = {rid: [] for rid in ids}
    done: dict[str, float] = {}
    killed_on = None
    start = time.perf_counter()
    while len(done) < len(ids):
        for out in engine.step():
            texts[out.request_id] += out.text
            tokens[out.request_id] += out.token_ids
            if out.finished:
                done[out.request_id] = time.perf_counter() - start
        streaming_on_b = [r for r in ids if first_node[r] == "b" and r not in done and len(tokens[r]) >= 8]
        if kill is not None and killed_on is None and streaming_on_b:
            killed_on = kill(engine)
    return {
        "ids": ids,
        "texts": texts,
        "tokens": tokens,
        "done": done,
        "node": first_node,
        "killed": killed_on,
        "start": start,
    }


def chat_turns(
    engine, tokenizer, tag: str, apps: int = 8, turns: int = 3, seed: int = 1
) -> tuple[float, float]:
    """`apps` chats of `turns` turns (each prompt = the whole conversation so far), arrivals shuffled
    each turn. Returns (prefix-cache hit rate over turns 2+, TTFT p50 over turns 2+ in ms)."""
    rng = random.Random(seed)
    history = {
        a: tokenizer.encode(
            f"System: you are assistant {a} of team {a * 7}. "
            + " ".join(f"rule {a}.{r}: be brief." for r in range(12))
        )
        for a in range(apps)
    }
    params = SamplingParams(max_tokens=12, temperature=0)
    cached = prompted = 0
    ttfts: list[float] = []
    for turn in range(turns):
        order = list(range(apps))
        rng.shuffle(order)
        added, first, answers = {}, {}, {a: [] for a in order}
        for a in order:
            history[a] = history[a] + tokenizer.encode(
                f"\nUser turn {turn}: tell me one more thing.\nAssistant:"
            )
            request_id = f"{tag}-{a}-{turn}"
            engine.add(request_id, history[a], params, cache_namespace=f"{tag}-app{a}")
            added[request_id] = (a, time.perf_counter())
        live = set(added)
        while live:
            for out in engine.step():
                a, t0 = added[out.request_id]
                if out.request_id not in first:
                    first[out.request_id] = time.perf_counter() - t0
                    if turn > 0:
                        cached += out.num_cached_tokens
                        prompted += out.num_prompt_tokens
                answers[a] += out.token_ids
                if out.finished:
                    live.discard(out.request_id)
        for a in order:
            history[a] = history[a] + answers[a]
        if turn > 0:
            ttfts += list(first.values())
    return cached / max(prompted, 1), statistics.median(ttfts) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per decode stream")
    parser.add_argument("--streams", type=int, default=8, help="streams per node in the decode runs")
    args = parser.parse_args()
    print(f"load average at start: {load_average()} ({os.cpu_count()} cores)")
    path = str(ModelStore().model_path(MODEL))

    t0 = time.perf_counter()
    head = {"num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 * MB}
    cluster = Cluster(initialize_head=True, connect=True, head_node_args=head)
    directory = start_registry(SECRET)
    ray_nodes = {name: cluster.add_node(num_cpus=1, object_store_memory=80 * MB) for name in ("a", "b")}
    cluster.wait_for_nodes()
    print(f"cluster of a head and 2 nodes up in {time.perf_counter() - t0:.1f} s")
    rss, cpu, count = ray_idle_cost()
    print(
        f"Ray idle (head + 2 nodes, {count} processes, no engine): RSS {rss / MB:.0f} MB, "
        f"CPU {cpu * 100:.1f}% of one core"
    )

    def join(name: str) -> None:
        join_node(
            directory,
            NodeSpec(name, ray_nodes[name].node_id, ("llm",), ((MODEL, path),), 1, KV_BYTES),
            SECRET,
        )

    t0 = time.perf_counter()
    for name in ray_nodes:
        join(name)
    print(f"2 nodes joined with {MODEL} loaded in {time.perf_counter() - t0:.1f} s")

    params = SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True)
    one = ClusterEngine(MODEL, OnlyNodes(directory, {"a"}))
    tokenizer = one.tokenizer
    streams = args.streams
    import torch

    torch.set_num_threads(1)
    config = EngineConfig(num_threads=1, kv_cache_bytes=KV_BYTES, batch_invariant=True)  # as on nodes
    local = LLMEngine.from_path(path, config)
    single = ClusterEngine(MODEL, OnlyNodes(directory, {"a"}), steps_per_call=1)
    rates = {"local": [], "one": [], "single": [], "two": []}
    two = ClusterEngine(MODEL, directory)
    for round_ in range(2):  # alternate, so a burst of other load hits each more evenly
        rates["local"].append(
            decode_rate(local, prompts_for(tokenizer, streams, round_), params, f"l{round_}")
        )
        rates["one"].append(decode_rate(one, prompts_for(tokenizer, streams, round_), params, f"o{round_}"))
        rates["single"].append(
            decode_rate(single, prompts_for(tokenizer, streams, round_), params, f"s{round_}")
        )
        rates["two"].append(
            decode_rate(two, prompts_for(tokenizer, 2 * streams, round_), params, f"t{round_}")
        )
    output_bytes = step_output_bytes(local, prompts_for(tokenizer, streams, 9), params)
    del local
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"decode, {streams} streams per node, {args.tokens} tokens, 1 thread each (median of 2 rounds):")
    print(f"  in-process engine, 1 node's load: {med['local']:.1f} tok/s  (rounds {rates['local']})")
    print(f"  remote engine, 1 node:            {med['one']:.1f} tok/s  (rounds {rates['one']})")
    print(f"  the same, 1 step per call:        {med['single']:.1f} tok/s  (rounds {rates['single']})")
    print(f"  remote engines, 2 nodes:          {med['two']:.1f} tok/s  (rounds {rates['two']})")
    print(f"  2 nodes / 1 node: {med['two'] / med['one']:.2f}x (goal >= 1.6)")
    print(
        f"  remote / in-process: {med['one'] / med['local']:.2f} "
        f"({(1 - med['one'] / med['local']) * 100:+.1f}% slower; goal <= 10%; 1 step per call: "
        f"{(1 - med['single'] / med['local']) * 100:+.1f}%)"
    )
    step_ms = streams / med["single"] * 1000
    round_trip = actor_round_trip_ms(directory)
    print(
        f"  remote step {step_ms:.1f} ms vs in-process {streams / med['local'] * 1000:.1f} ms; a no-op call "
        f"to the node's engine actor: median {round_trip:.2f} ms; one step's output pickled: "
        f"{output_bytes} bytes"
    )

    # ---- failover ----
    fparams = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)  # every stream 32 tokens long
    prompts = prompts_for(tokenizer, 32, seed=7)
    reference = run_streams(ClusterEngine(MODEL, directory), prompts, fparams, "ref", "undisturbed")

    def kill_b(engine) -> float:
        """Node b dies: its engine process is killed (SIGKILL), then its raylet and the rest."""
        pids = [call(h.facts.remote()).pid for n, h in directory.engines(MODEL) if n == "b"]
        moment = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        cluster.remove_node(ray_nodes.pop("b"), allow_graceful=False)
        return moment

    survivor = ClusterEngine(MODEL, directory)
    moved_run = run_streams(survivor, prompts, fparams, "ref", "killed", kill=kill_b)
    if moved_run["killed"] is None:
        raise SystemExit("no stream on node b reached 8 tokens: nothing to kill")
    killed_at = moved_run["killed"] - moved_run["start"]
    moved = [r for r in moved_run["ids"] if moved_run["node"][r] == "b" and moved_run["done"][r] > killed_at]
    same = sum(moved_run["texts"][r] == reference["texts"][r] for r in reference["ids"])
    same_ids = sum(moved_run["tokens"][r] == reference["tokens"][r] for r in reference["ids"])
    differ = [r for r in reference["ids"] if moved_run["tokens"][r] != reference["tokens"][r]]
    differ_moved = sum(r in moved for r in differ)
    # Where a greedy stream differs: the first differing token, and whether it came after the kill
    # (the re-prefill, or a larger batch on the surviving node) or before it.
    first_diff = [
        next(
            i
            for i, (x, y) in enumerate(zip(moved_run["tokens"][r], reference["tokens"][r], strict=True))
            if x != y
        )
        for r in differ
    ]
    added = [moved_run["done"][r] - reference["done"][r] for r in moved] or [float("nan")]
    stayed = [moved_run["done"][r] - reference["done"][r] for r in moved_run["ids"] if r not in moved]
    print(
        "failover, 32 streams over 2 nodes, node b killed once a stream on it had 8 tokens "
        f"({len(moved)} moved):"
    )
    print(
        f"  completed {len(moved_run['done'])}/32; identical to the undisturbed run: texts {same}/32, "
        f"token ids {same_ids}/32; failovers {survivor.num_failovers}; differing: {len(differ)} "
        f"({differ_moved} of them moved), first differing token at {first_diff}"
    )
    print(
        f"  added completion time, moved streams: median {statistics.median(added):.2f} s "
        f"(max {max(added):.2f} s); streams that stayed: median {statistics.median(stayed):.2f} s"
    )

    # ---- a node comes back; affinity vs round robin ----
    ray_nodes["b"] = cluster.add_node(num_cpus=1, object_store_memory=80 * MB)
    join("b")
    affinity = chat_turns(ClusterEngine(MODEL, directory, placement="affinity"), tokenizer, "aff")
    rr = chat_turns(ClusterEngine(MODEL, directory, placement="round_robin"), tokenizer, "rr")
    print("affinity, 8 apps x 3 turns over 2 nodes (node b rejoined), turns 2-3:")
    print(f"  affinity:    prefix hit rate {affinity[0] * 100:.0f}%, TTFT p50 {affinity[1]:.0f} ms")
    print(f"  round robin: prefix hit rate {rr[0] * 100:.0f}%, TTFT p50 {rr[1]:.0f} ms")
    print(f"load average at end: {load_average()}")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
