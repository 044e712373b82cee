"""Where a streamed chat request's time goes inside a real `llmasos serve`, phase by phase.

    .venv/bin/python benchmarks/request_phases.py [--clients 32] [--seconds 10] [--warmup 4]
        [--max-tokens 48] [--client-niceness 10]

Starts the server (default model, fresh LLMASOS_HOME, a `load` app as `server_load.py` makes it) with
`phase_probe.py` inside it, runs `--clients` streaming clients that each send their next request when
their last one ends (as `server_load.py` does), and prints for the requests that arrived after the
warm-up the mean, median and p95 of each phase in ms, and in decode steps:
- arrival -> system call: the HTTP stack, authentication, the body's parsing, the hop to a thread;
- system call -> tokenizer: admission's checks, the model's residency;
- tokenizer hop, tokenizing: waiting for a tokenizer thread, then encoding;
- tokenized -> admitted: the quota's reservation and the audit's start row queued, under the lock;
- admitted -> start row durable: the audit writer's transaction and anchor;
- start row durable -> headers: back to the event loop and the response's start;
- admitted -> first in a step, its prefill step: the kernel's side, beside the ones above;
- last token -> final event: the audit end row written (the final event waits for it);
- final event -> `[DONE]` written: delivery to the event loop and the write.
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

from load_phases import Timeline
from server_load import clients_below, free_port, llmasos, prepare_home, run_load, stop, wait_until_serving

HERE = Path(__file__).resolve().parent

#: (name, from, to): each phase between two of the probe's timestamps.
PHASES = (
    ("arrival -> system call", "arrive", "call"),
    ("system call -> tokenizer", "call", "tokenize_submitted"),
    ("tokenizer hop", "tokenize_submitted", "tokenize_began"),
    ("tokenizing", "tokenize_began", "tokenized"),
    ("tokenized -> admitted", "tokenized", "admit"),
    ("admitted -> start row durable", "admit", "start_row_durable"),
    ("start row durable -> headers", "start_row_durable", "headers"),
    ("= arrival -> headers", "arrive", "headers"),
    ("admitted -> first in a step", "admit", "started_at"),
    ("first step -> first token", "started_at", "first_token_at"),
    ("last token -> final event", "finished_at", "final_emitted"),
    ("final event -> [DONE] written", "final_emitted", "done_sent"),
    ("= last token -> [DONE] written", "finished_at", "done_sent"),
)


def serve_probed(home: Path, out: Path, model: str) -> tuple[subprocess.Popen, str]:
    """`llmasos serve` with the probe inside, once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import phase_probe; phase_probe.main()"
    options = (
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--preload",
        model,
        "--requests-per-minute",
        "0",
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code, "serve", *options],
        env={**os.environ, "LLMASOS_HOME": str(home), "PHASE_PROBE_OUT": str(out)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return wait_until_serving(server, url, 180), url


def record_stacks(pid: int, path: str, delay: float, seconds: float) -> subprocess.Popen:
    """py-spy recording `pid`'s threads for `seconds` after `delay` (sampling without stopping it)."""
    spy = Path(sys.executable).parent / "py-spy"
    command = (
        f"sleep {delay}; exec {spy} record --pid {pid} --duration {int(seconds)} --threads --nonblocking "
        f"--format raw --output {path}"
    )
    return subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(records: dict[str, dict[str, float]], since: float, step: float | None) -> None:
    rows = [r for r in records.values() if r.get("arrive", 0) >= since and "done_sent" in r]
    print(
        f"{len(rows)} requests after the warm-up" + (f"; a decode step {1000 * step:.0f} ms" if step else "")
    )
    print(f"{'phase':34} {'mean':>8} {'p50':>8} {'p95':>8}  (ms){'   mean steps' if step else ''}")
    for name, start, end in PHASES:
        spans = sorted(r[end] - r[start] for r in rows if start in r and end in r)
        if not spans:
            print(f"{name:34} {'-':>8}")
            continue
        mean = statistics.fmean(spans)
        p95 = spans[min(len(spans) - 1, int(0.95 * len(spans)))]
        steps = f"   {mean / step:9.2f}" if step else ""
        print(f"{name:34} {1000 * mean:8.1f} {1000 * statistics.median(spans):8.1f} {1000 * p95:8.1f}{steps}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, after the warm-up")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--client-niceness", type=int, default=10, help="as server_load.py's")
    parser.add_argument("--model", default="default")
    parser.add_argument(
        "--py-spy", metavar="FILE", help="also record the server with py-spy (collapsed stacks)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="request-phases-") as tmp:
        home, out = Path(tmp) / "home", Path(tmp) / "phases.json"
        home.mkdir(mode=0o700)
        prepare_home(home, args.model)
        key = llmasos(
            home, "apps", "create", "load", "--priority", "normal", "--max-concurrent", str(args.clients)
        ).stdout.strip()
        server, url = serve_probed(home, out, args.model)
        try:
            asyncio.run(run_load(url, key, 4, 5, 8, 60, args.model))  # warm up: first steps, allocator
            since = time.monotonic() + args.warmup
            load = run_load(
                url, key, args.clients, args.warmup + args.seconds, args.max_tokens, 60, args.model
            )
            spy = record_stacks(server.pid, args.py_spy, args.warmup, args.seconds) if args.py_spy else None
            results = clients_below(args.client_niceness, load)
            if spy is not None:
                spy.wait()
            time.sleep(2.5)  # the probe writes its file every second
        finally:
            stop(server)
        timeline = Timeline.of([r for r in results if r["times"]["sent"] >= since - 0.0])
        if timeline is not None:
            print(f"the clients' view: {timeline.describe(args.clients)}")
        outcomes: dict[str, int] = {}
        for r in results:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        print(f"outcomes: {outcomes}")
        report(json.loads(out.read_text()), since, timeline.step if timeline else None)


if __name__ == "__main__":
    main()
