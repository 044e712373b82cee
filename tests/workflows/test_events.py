"""A run's events reach whoever follows them when the store commits them, not on a timer: the SSE
route, `follow` (the in-process SDK) and `wait` sleep on the store's change signal. Each test makes
the timer an hour long, so only a wake-up from a commit lets the follower see what came after it
started waiting."""

from __future__ import annotations

import json
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llmasos.api import workflow_routes
from llmasos.api.auth import caller
from llmasos.workflows import executor, parse
from llmasos.workflows.calls import WorkflowCalls
from tests.helpers.workflows import Calls, make_runner

HOUR = 3600.0
SPEC = {
    "name": "gated",
    "steps": {
        "count": {"kind": "function", "name": "count_words", "input": {"text": "a b"}},
        "shout": {"kind": "function", "name": "upper", "input": {"text": "done"}, "needs": ["count"]},
    },
}


@pytest.fixture
def gated(llmasos_home):
    """A runner whose `count` step waits for the test's go, and that go."""
    calls = Calls()
    go = calls.gate["count_words"] = threading.Event()
    runner, app = make_runner(calls)
    yield runner, app, go
    go.set()
    runner.close()


def spy_waits(calls: WorkflowCalls) -> threading.Event:
    """An event set once a follower sleeps on the store's change signal."""
    changes, sleeping = calls.store.changes, threading.Event()
    wait, wait_async = changes.wait, changes.wait_async

    def spied(seen, timeout):
        sleeping.set()
        return wait(seen, timeout)

    async def spied_async(seen, timeout):
        sleeping.set()
        return await wait_async(seen, timeout)

    changes.wait, changes.wait_async = spied, spied_async
    return sleeping


def test_the_sse_stream_sends_events_committed_while_it_waits(gated, monkeypatch) -> None:
    runner, app, go = gated
    monkeypatch.setattr(workflow_routes, "EVENT_WAIT_SECONDS", HOUR)
    calls = WorkflowCalls(runner)
    api = FastAPI()
    api.state.workflows = calls
    api.dependency_overrides[caller] = lambda: app
    api.include_router(workflow_routes.router)
    sleeping = spy_waits(calls)
    run_id = runner.submit(app, parse(SPEC))
    answer: dict = {}
    with TestClient(api) as http:  # it hands the body over once the stream has ended
        follower = threading.Thread(
            target=lambda: answer.update(r=http.get(f"/os/workflows/runs/{run_id}/events")), daemon=True
        )
        follower.start()
        assert sleeping.wait(10), "the stream never waited for a commit"
        go.set()  # the rest of the run is committed while the stream sleeps
        follower.join(20)
        assert not follower.is_alive(), "the stream slept through the commits"
    lines = [line for line in answer["r"].text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert [e["step"] for e in events if e["type"] == "step_succeeded"] == ["count", "shout"]
    assert events[-1]["type"] == "run_succeeded"


def test_follow_and_wait_wake_on_commits(gated, monkeypatch) -> None:
    runner, app, go = gated
    monkeypatch.setattr(executor, "POLL_SECONDS", HOUR)
    calls = WorkflowCalls(runner)
    sleeping = spy_waits(calls)
    run_id = runner.submit(app, parse(SPEC))
    seen: list[dict] = []
    follower = threading.Thread(
        target=lambda: seen.extend(calls.follow(app, run_id, wait_s=HOUR)), daemon=True
    )
    follower.start()
    assert sleeping.wait(10), "follow never waited for a commit"
    ended: dict = {}
    waiter = threading.Thread(target=lambda: ended.update(runner.wait(run_id, HOUR)), daemon=True)
    waiter.start()
    go.set()
    for thread in (follower, waiter):
        thread.join(20)
    assert not waiter.is_alive() and ended["status"] == "succeeded", "wait slept through the commits"
    assert not follower.is_alive(), "follow slept through the commits"
    assert [e["type"] for e in seen][-1] == "run_succeeded"
    assert [e["step"] for e in seen if e["type"] == "step_succeeded"] == ["count", "shout"]
