"""Run inside a `llmasos serve` process by `request_phases.py`: timestamps of each phase of every
streamed chat request, written as JSON to $PHASE_PROBE_OUT (every second, and at exit).

    python -c "import sys; sys.path.insert(0, 'benchmarks'); import phase_probe; phase_probe.main()" serve ...

It wraps, without changing what they do: the ASGI app (arrival, response headers, the write holding
`[DONE]`), the chat system call's admission (its start, the tokenizer's hop and work, `Kernel.admit`,
the audit start row's wait), and the kernel's late final event (after the audit end row). The kernel's
own record of each process gives when it first ran, its first token and its end. All times are
`time.monotonic()`, the kernel's clock.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from typing import Any

_records: dict[int, dict[str, float]] = {}  # pid -> phase -> time
_by_request: dict[int, dict[str, float]] = {}  # id(scope) -> phase -> time, until its pid is known
_lock = threading.Lock()
_local = threading.local()  # the admission thread's times until its pid is known
_kernel: Any = None


def _note(pid: int, **times: float) -> None:
    with _lock:
        _records.setdefault(pid, {}).update(times)


class _Probe:
    """The outermost ASGI app: arrival, headers and the `[DONE]` write of each chat completion."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:  # `app.state` and the like
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        times = {"arrive": time.monotonic()}
        pid: list[int] = []

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                times["headers"] = time.monotonic()
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-llmasos-pids":
                        pid.append(int(value.split(b",")[0]))
            elif message["type"] == "http.response.body" and b"[DONE]" in message.get("body", b""):
                await send(message)
                times["done_sent"] = time.monotonic()
                if pid:
                    _note(pid[0], **times)
                return
            await send(message)

        await self.app(scope, receive, timed_send)


def _patch() -> None:
    from llmasos.api import server
    from llmasos.kernel import generation_calls, kernel
    from llmasos.kernel.call_trail import CallTrail

    create_app = server.create_app

    def probed_app(syscalls: Any, **options: Any) -> Any:
        global _kernel
        _kernel = syscalls.kernel
        return _Probe(create_app(syscalls, **options))

    server.create_app = probed_app

    start = generation_calls.GenerationCalls._start

    def timed_start(self: Any, *args: Any, **kw: Any) -> Any:
        _local.times = {"call": time.monotonic()}
        return start(self, *args, **kw)

    generation_calls.GenerationCalls._start = timed_start

    tokenize = generation_calls.GenerationCalls._tokenize

    def timed_tokenize(self: Any, request: Any, tokenizer: Any) -> list[int]:
        submitted = time.monotonic()
        began: list[float] = []
        encode = request.encode

        def encode_timed(tok: Any) -> list[int]:
            began.append(time.monotonic())
            return encode(tok)

        object.__setattr__(request, "encode", encode_timed)
        ids = tokenize(self, request, tokenizer)
        times = getattr(_local, "times", {})
        times.update(tokenize_submitted=submitted, tokenize_began=began[0], tokenized=time.monotonic())
        return ids

    generation_calls.GenerationCalls._tokenize = timed_tokenize

    admit = kernel.Kernel.admit

    def timed_admit(self: Any, process: Any, work: Any) -> None:
        times = getattr(_local, "times", {})
        _note(process.pid, **times, admit=time.monotonic())
        _local.pid = process.pid
        admit(self, process, work)

    kernel.Kernel.admit = timed_admit

    wait_started = CallTrail.wait_started

    def timed_wait_started(self: Any, row: Any, *args: Any) -> None:
        wait_started(self, row, *args)
        pid = getattr(_local, "pid", None)
        if pid is not None:
            _note(pid, start_row_durable=time.monotonic())

    CallTrail.wait_started = timed_wait_started

    emit_late = kernel.Kernel._emit_late

    def timed_emit_late(self: Any, work: Any, event: Any) -> None:
        _note(event.pid, final_emitted=time.monotonic())
        emit_late(self, work, event)

    kernel.Kernel._emit_late = timed_emit_late


def _dump() -> None:
    path = os.environ.get("PHASE_PROBE_OUT")
    if not path or _kernel is None:
        return
    with _lock:
        rows = {pid: dict(times) for pid, times in _records.items()}
    with _kernel.lock:
        for pid, times in rows.items():
            process = _kernel.table.get(pid)
            if process is not None:
                for name in ("created_at", "started_at", "first_token_at", "finished_at"):
                    if getattr(process, name) is not None:
                        times[name] = getattr(process, name)
    with _lock:  # times the kernel forgot (finished_retention) stay as read last time
        for pid, times in rows.items():
            _records[pid].update(times)
        rows = {pid: dict(times) for pid, times in _records.items()}
    tmp = path + ".tmp"
    with open(tmp, "w") as out:
        json.dump(rows, out)
    os.replace(tmp, path)


def _dump_every_second() -> None:
    while True:
        time.sleep(1.0)
        try:
            _dump()
        except Exception as err:  # a probe must not take the server down
            print(f"phase probe: {err!r}", file=sys.stderr)


def main() -> None:
    _patch()
    atexit.register(_dump)
    threading.Thread(target=_dump_every_second, name="phase-probe", daemon=True).start()
    from llmasos.cli.main import main as llmasos

    sys.argv[0] = "llmasos"
    llmasos()
