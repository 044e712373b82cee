"""Service calls under load on a real `llmasos serve` process: does the server stay responsive, and do
calls whose clients hang up stop?

    .venv/bin/python benchmarks/program_calls.py [--calls 48] [--max-tokens 200] [--model-path F.gguf]

Starts the server as its own process on a free loopback port with a fresh LLMASOS_HOME holding one
model (the tiny random test model unless --model-path names a GGUF), then:
1. sends `--calls` concurrent `POST /os/services/chat` calls and, while they run, asks `/healthz`
   every 0.1 s: prints the calls' statuses (200, or 429 with Retry-After when the server's program
   pool is full) and /healthz latency p50 / max;
2. starts `--calls` more service calls and closes every client after one second: prints how long the
   server still had processes running after its clients left.
Run it against another checkout with PYTHONPATH=/that/checkout to compare, in the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from server_load import free_port

ROOT = Path(__file__).resolve().parent.parent


def start_server(home: Path, model_path: Path | None) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "LLMASOS_HOME": str(home)}
    if model_path is None:
        sys.path.insert(0, str(ROOT))
        from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

        model_path, _ = write_tiny_gguf(home.parent / "tiny.gguf", TinySpec(context=1024))
    cli = [sys.executable, "-m", "llmasos.cli.main"]
    subprocess.run([*cli, "models", "pull", str(model_path), "--name", "bench"], env=env, check=True)
    port = free_port()
    # No request-start limit (api/request_rate.py): --calls 48 calls start at once from one app, past
    # the default burst of 40, and what is measured is the program pool's own 429s, not the rate's.
    limit = ["--requests-per-minute", "0"]
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--preload", "bench", "--log-level", "warning", *limit], env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).json()["resident_models"]:
                return server, url, (home / "admin.key").read_text().strip()
        except (httpx.HTTPError, FileNotFoundError, KeyError):
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not start")


async def one_call(client: httpx.AsyncClient, max_tokens: int, seed: int) -> int:
    body = {"input": f"Tell me story number {seed}.", "model": "bench"}
    body["params"] = {"max_tokens": max_tokens, "temperature": 1.0, "seed": seed}
    response = await client.post("/os/services/chat", json=body)
    return response.status_code


async def health_under_load(url: str, key: str, calls: int, max_tokens: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=calls + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as client:
        tasks = [asyncio.create_task(one_call(client, max_tokens, i)) for i in range(calls)]
        latencies = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as probe:
            while not all(t.done() for t in tasks):
                started = time.perf_counter()
                await probe.get("/healthz")
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)
        statuses = [t.result() for t in tasks]
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    print(f"{calls} concurrent service calls: statuses {counts}")
    print(
        f"/healthz during them: {len(latencies)} probes, p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )


async def hang_ups(url: str, key: str, calls: int, max_tokens: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=calls + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as client:
        tasks = [asyncio.create_task(one_call(client, max_tokens, 1000 + i)) for i in range(calls)]
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    left = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        while True:
            running = (await client.get("/os/ps", params={"all": "false"})).json()["processes"]
            if not running:
                break
            await asyncio.sleep(0.1)
    ran_on = time.perf_counter() - left
    print(f"{calls} service calls whose clients left after 1 s: processes ran on for {ran_on:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--model-path", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmasos-bench-") as tmp:
        home = Path(tmp) / "home"
        server, url, key = start_server(home, args.model_path)
        try:
            asyncio.run(health_under_load(url, key, args.calls, args.max_tokens))
            asyncio.run(hang_ups(url, key, args.calls, args.max_tokens))
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(json.dumps({"calls": args.calls, "max_tokens": args.max_tokens}))


if __name__ == "__main__":
    main()
