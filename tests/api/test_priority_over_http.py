"""The kernel's classes hold through HTTP: a flood of `batch` streams cannot starve an `interactive` app."""

from __future__ import annotations

import threading

import httpx


def test_interactive_request_finishes_while_batch_streams_still_run(tiny_server):
    batch_key = tiny_server.new_app("bulk", priority="batch", max_concurrent=0, max_queued=0)
    fast_key = tiny_server.new_app("ui", priority="interactive")
    batch_pids: list[int] = []
    started = threading.Barrier(13)

    def flood() -> None:
        body = {"model": "tiny", "prompt": "a b c", "max_tokens": 250, "temperature": 1.0, "stream": True}
        with httpx.stream(
            "POST",
            tiny_server.url + "/v1/completions",
            json=body,
            headers={"Authorization": f"Bearer {batch_key}"},
            timeout=120,
        ) as r:
            batch_pids.append(int(r.headers["x-llmasos-pids"]))
            started.wait()
            for _ in r.iter_lines():
                pass

    threads = [threading.Thread(target=flood) for _ in range(12)]
    for t in threads:
        t.start()
    started.wait()  # every batch stream is admitted before the interactive request arrives
    r = tiny_server.client(fast_key).post(
        "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 20, "temperature": 1.0}
    )
    assert r.status_code == 200
    table = tiny_server.syscalls.kernel.table
    still_running = [pid for pid in batch_pids if not table[pid].is_terminal]
    for t in threads:
        t.join()
    assert len(still_running) >= 6, "the interactive request waited for the batch flood to drain"
    ui = table[int(r.headers["x-llmasos-pids"])]
    assert ui.tokens_out == 20
