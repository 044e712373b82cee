"""Service calls over HTTP run on a bounded pool of their own (429 with Retry-After when it is full,
while /healthz still answers), and a call whose client hangs up is cancelled with its processes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import httpx
import pytest

from llmasos.api import program_calls
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import QuotaExceededError
from llmasos.programs import NO_PARAMS, Program, default_registry
from llmasos.services import Service
from llmasos.services.base import Call
from llmasos.tools import Tool, ToolResult


class Gate(Tool):
    """A tool that holds its thread until the test opens the gate: a call that takes as long as needed."""

    name = "gate"
    description = "Wait for the test to open the gate."
    parameters: ClassVar[dict] = NO_PARAMS
    result_schema: ClassVar[dict] = {"type": "object"}

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    def run(self, args: dict, context) -> ToolResult:
        with self._lock:
            self.waiting += 1
        self.opened.wait(timeout=120)
        return ToolResult(self.name, {})


class Ramble(Service):
    """One long generation (EOS ignored, so the random model cannot end it early)."""

    name = "ramble"
    description = "Generate for a long time."
    input_schema: ClassVar[dict] = {"type": "string"}
    params_schema: ClassVar[dict] = NO_PARAMS
    output_schema: ClassVar[dict] = {"type": "string"}

    def _run(self, session, input: str, params: dict) -> tuple[Any, dict]:
        sampling = SamplingParams(max_tokens=900, ignore_eos=True, temperature=1.0, seed=1)
        return session.chat(Call([{"role": "user", "content": input}], 900, params=sampling)).text, {}


@pytest.fixture
def register() -> Iterator[Callable[[Program], Program]]:
    registry, added = default_registry(), []

    def add(program: Program) -> Program:
        registry.register(program)
        added.append(program.name)
        return program

    yield add
    for name in added:
        registry.remove(name)


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_full_pool_refuses_with_429_while_healthz_answers(long_tiny_server, register):
    gate = register(Gate())
    size = program_calls.MAX_PROGRAM_CALLS
    results: list[int] = []

    def call() -> None:
        with long_tiny_server.client() as client:
            results.append(client.post("/os/services/gate", json={"input": {}}, timeout=120).status_code)

    threads = [threading.Thread(target=call) for _ in range(size)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: gate.waiting == size, f"{size} gate calls to hold every program thread")
        client = long_tiny_server.client()
        refused = client.post("/os/services/gate", json={"input": {}})
        assert refused.status_code == 429, refused.text
        assert float(refused.headers["Retry-After"]) >= 1
        assert f"runs {size} program calls at once" in refused.json()["error"]["message"]
        health = client.get("/healthz", timeout=10)  # the request pool is not theirs: it answers now
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        gate.opened.set()
        for thread in threads:
            thread.join(timeout=120)
    assert results == [200] * size
    assert long_tiny_server.client().post("/os/services/gate", json={"input": {}}).status_code == 200


def test_a_service_call_whose_client_hangs_up_is_cancelled_with_its_processes(long_tiny_server, register):
    register(Ramble())
    syscalls = long_tiny_server.syscalls
    body = json.dumps({"input": "Tell me a story.", "model": "tiny"}).encode()
    host, port = long_tiny_server.url.removeprefix("http://").split(":")
    head = (
        f"POST /os/services/ramble HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {long_tiny_server.admin_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body)
        _wait_for(
            lambda: any(p.tokens_out > 0 for p in syscalls.kernel.table.values()), "the call to generate"
        )
    # The client is gone; its process must end now, not after its 900 tokens.
    (process,) = syscalls.kernel.table.values()
    _wait_for(lambda: process.is_terminal, "the process to end")
    assert process.state.value == "cancelled", (process.state, process.reason, process.tokens_out)
    assert "client went away" in process.reason and process.tokens_out < 900


def test_the_pool_is_free_again_after_a_refusal_and_after_errors(long_tiny_server):
    client = long_tiny_server.client()
    for _ in range(program_calls.MAX_PROGRAM_CALLS + 2):  # every failed call gives its thread back
        r = client.post("/os/services/calculator", json={"input": {"expression": "1/0"}})
        assert r.status_code == 400, r.text
    ok = client.post("/os/services/calculator", json={"input": {"expression": "6*7"}})
    assert ok.status_code == 200 and ok.json()["output"]["value"] == 42
    with httpx.Client(base_url=long_tiny_server.url) as anonymous:
        assert anonymous.post("/os/services/calculator", json={"input": {}}).status_code == 401


def test_closing_the_pool_cancels_the_calls_still_running() -> None:
    from llmasos.errors import CallCancelledError
    from llmasos.programs import Cancellation

    pool = program_calls.ProgramPool(1)
    started = threading.Event()

    def held(cancellation: Cancellation) -> None:
        started.set()
        while not cancellation.is_set:  # a program between steps
            time.sleep(0.01)
        cancellation.check()

    async def scenario() -> None:
        call = asyncio.create_task(pool.run(None, held))
        await asyncio.to_thread(started.wait, 30)
        with pytest.raises(QuotaExceededError):  # its one thread is taken
            await pool.run(None, held)
        pool.close()  # what the server's shutdown does
        with pytest.raises(CallCancelledError):
            await asyncio.wait_for(call, 30)

    asyncio.run(scenario())
    assert pool.busy == 0
