"""What follows the console in benchmarks/console_overhead.py: a Chromium page, or plain stream readers;
the Chromium processes' CPU by type; and the server it reads, with what one snapshot costs it."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from server_load import run_load, serve, thread_cpu_seconds

from llmasos.console.routes import VIEW_SECTIONS as CONSOLE_VIEW_SECTIONS

CHROMIUM = "/usr/bin/chromium"
#: The overview's sections each console view follows, as the stream's `views=` spells them (the page
#: reads them from the same file: llmasos/console/static/js/view_sections.json).
VIEW_SECTIONS = {view: ",".join(sections) for view, sections in CONSOLE_VIEW_SECTIONS.items()}


class ConsolePage:
    """One browser context's page that shows the console (signed in as the admin) or about:blank."""

    #: The renderer main thread's seconds by kind of work (Chrome DevTools' Performance domain).
    WORK = ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "TaskDuration")

    def __init__(self, browser, url: str, admin_key: str) -> None:
        self.page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        self.devtools = self.page.context.new_cdp_session(self.page)
        self.url, self.admin_key = url, admin_key

    def open(self, view: str) -> None:
        page = self.page
        page.goto(self.url + "/ui/")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#signin-key", self.admin_key)
        page.set_checked("#signin-remember", False)
        page.click("#signin-button")
        page.wait_for_selector("#console:not([hidden])")
        if view != "processes":
            page.click(f"#tabs button[data-view={view}]")
        page.wait_for_selector(f"body[data-following={view}]")
        self.devtools.send("Performance.enable")

    def main_thread_seconds(self) -> dict[str, float]:
        """The page's main-thread seconds so far: script, layout, style and all its tasks."""
        metrics = self.devtools.send("Performance.getMetrics")["metrics"]
        return {m["name"]: m["value"] for m in metrics if m["name"] in self.WORK}

    def blank(self) -> None:
        """Leave the console: its stream ends with the page; the browser and its context stay."""
        self.page.goto("about:blank")

    def updates(self) -> int:
        """The stream's events the page has drawn since it was opened (0 on about:blank)."""
        return int(self.page.evaluate("(document.body && document.body.dataset.updates) || 0"))


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


def chromium_cpu_by_type() -> dict[str, float]:
    """CPU seconds (user + system) of the Chromium processes below this one (the browser Playwright
    started and its children), by Chromium's process type (`--type=` on its command line: renderer,
    gpu-process, utility, zygote; `browser` for the main one), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, stats = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
            # Chromium rewrites its children's titles, NUL-separated or not: split on both.
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
        kind = next((a[7:].decode() for a in command if a.startswith(b"--type=")), "browser")
        stats[int(entry.name)] = (name, kind, (int(fields[11]) + int(fields[12])) / tick)
    mine = {os.getpid()}
    grew = True  # a child's pid may be lower than its parent's: widen until nothing is added
    while grew:
        before = len(mine)
        mine |= {pid for pid, parent in parents.items() if parent in mine}
        grew = len(mine) > before
    by_type: dict[str, float] = {}
    for pid, (name, kind, cpu) in stats.items():
        if pid in mine and name.startswith("chrom"):
            by_type[kind] = by_type.get(kind, 0.0) + cpu
    return by_type


def start_server(home: Path, model: str) -> tuple[subprocess.Popen, str]:
    # No request-start limit (api/request_rate.py; 1,200 a minute, burst 40, by default): `snapshot_cost`
    # asks for 200 overviews back to back with the admin key (refused past the burst whenever one takes
    # under 50 ms), and the load app's clients restart each stream as it ends, at a pace set by the
    # machine's speed. They are the load measured here, not an attacker.
    return serve(home, "--preload", model, "--requests-per-minute", "0", seconds=180)


def snapshot_cost(url: str, admin_key: str, server_pid: int, sections: str, view: str) -> None:
    """Prints the server's CPU (all its threads) per overview snapshot, of every section and of
    `view`'s: CPU time, not wall time, so it holds on a busy machine."""
    costs = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        for params in ({}, {"views": sections}):
            before = sum(thread_cpu_seconds(server_pid))
            for _ in range(100):
                client.get("/os/console/overview", params=params).raise_for_status()
            costs.append((sum(thread_cpu_seconds(server_pid)) - before) / 100)
    print(
        f"server CPU per overview snapshot: {1000 * costs[0]:.1f} ms for every section, "
        f"{1000 * costs[1]:.1f} ms for the {view} view's ({sections or 'none'}): one page "
        f"refreshing once a second takes {100 * costs[1]:.2f}% of one core"
    )


def stream_bytes(url: str, key: str, admin_key: str, args: argparse.Namespace, sections: str) -> None:
    """Prints the bytes per event of the overview stream under the same load (8 s each), with every
    section in every event (as the console followed it before it asked for views) and with the
    view's changed sections only."""
    sizes = []
    for views in (None, sections):
        readers = StreamReaders(url, admin_key, 1, views)
        load = run_load(url, key, args.clients, 8, args.max_tokens, 300.0, args.model)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, load).result()
        readers.close()
        sizes.append(readers.bytes / max(readers.events, 1))
    print(
        f"stream under load: {sizes[0] / 1024:.1f} KiB per event (one a second) with every section in "
        f"every event, {sizes[1] / 1024:.2f} KiB with the {args.view} view's changed sections only"
    )
