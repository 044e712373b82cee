"""What the console's page costs the browser, apart from any load on the model: Chromium's CPU by
process type while the page follows a view, for each set of launch flags, alternating.

    .venv/bin/python benchmarks/console_page_cost.py [--seconds 20] [--rounds 2] [--flags plain,lean]
        [--view processes]

A server in this process on the tiny random model (written by tests/helpers/tiny_model.py), each
engine step slowed by 50 ms, with 16 clients streaming 40-token chats back to back: the processes
table gains, moves and ends rows every second as under benchmarks/console_overhead.py's real load,
while the server itself takes little CPU. Per round and flag set it launches Chromium, opens the
console as the admin on `--view`, waits 2 s, and prints the CPU seconds of the browser's processes
by type over `--seconds` (CPU time, so it holds on a busy machine), the snapshots drawn, the rows
shown and the page's main-thread milliseconds (tasks, script, layout, style).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
from console_overhead import LEAN_FLAGS
from console_readers import CHROMIUM, ConsolePage, chromium_cpu_by_type

FLAGS = {"plain": [], "lean": LEAN_FLAGS}


def slow_server():  # -> tests.api.conftest.LiveServer
    os.environ["LLMASOS_HOME"] = tempfile.mkdtemp(prefix="llmasos-page-cost-")
    from llmasos.config import EngineConfig
    from tests.api.conftest import run_server
    from tests.helpers.tiny_model import write_tiny_gguf

    path, _ = write_tiny_gguf(Path(tempfile.mkdtemp()) / "tiny.gguf")
    running = run_server(path, "tiny", EngineConfig(block_size=4, kv_cache_bytes=16 * 2**20))
    server = next(running)
    server.running = running  # the generator's `finally` stops the server when it is collected
    chat(server, 2, "hi")  # loads the model
    engine = server.engine()
    step = engine.step
    engine.step = lambda *a, **kw: (time.sleep(0.05), step(*a, **kw))[1]
    return server


def chat(server, max_tokens: int, content: str) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={**body, "stream": True},
        headers=headers,
        timeout=120,
    ) as response:
        for _ in response.iter_bytes():
            pass


def measure(browser, server, args: argparse.Namespace) -> str:
    page = ConsolePage(browser, server.url, server.admin_key)
    page.open(args.view)
    time.sleep(2)
    cpu, work, drawn = chromium_cpu_by_type(), page.main_thread_seconds(), page.updates()
    time.sleep(args.seconds)
    cpu_after, work_after, drawn_after = chromium_cpu_by_type(), page.main_thread_seconds(), page.updates()
    rows = page.page.evaluate("document.querySelectorAll('.view:not([hidden]) tbody tr').length")
    used = {kind: cpu_after[kind] - cpu.get(kind, 0) for kind in cpu_after}
    spent = {name[: -len("Duration")]: 1000 * (work_after[name] - work.get(name, 0)) for name in work_after}
    return (
        f"browser CPU {sum(used.values()):.2f} s in {args.seconds:.0f} s "
        f"({100 * sum(used.values()) / args.seconds:.1f}% of a core): "
        + ", ".join(f"{kind} {s:.2f}" for kind, s in sorted(used.items()))
        + f"; {drawn_after - drawn} snapshots, {rows} rows; main thread ms: "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in sorted(spent.items()))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--flags", default="plain,lean", help="flag sets to compare: plain, lean")
    parser.add_argument("--view", default="processes")
    args = parser.parse_args()
    server = slow_server()
    stop = threading.Event()

    def client(number: int) -> None:
        while not stop.is_set():
            chat(server, 40, f"go {number}")

    for number in range(16):
        threading.Thread(target=client, args=(number,), daemon=True).start()
    time.sleep(3)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        for number in range(args.rounds):
            for name in args.flags.split(","):
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", *FLAGS[name]]
                )
                print(f"{name:5s} round {number}: {measure(browser, server, args)}", flush=True)
                browser.close()
    stop.set()


if __name__ == "__main__":
    main()
