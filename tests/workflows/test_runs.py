"""Runs on a runner over the real system calls (no model): results, concurrency, conditions, fan-out,
retries, timeouts, errors, approvals, sub-workflows, large outputs and resuming from the store."""

from __future__ import annotations

import threading
import time

import pytest

from llmasos.errors import WorkflowStateError
from llmasos.workflows import RunStore, WorkflowRunner, parse
from llmasos.workflows.store import WHOLE
from tests.helpers.workflows import Calls, make_runner


def flow(steps: dict, **fields) -> dict:
    return {"name": "t", "inputs": {"text": {"type": "string", "default": "a b c"}}, "steps": steps, **fields}


def fn(name: str, text: str = "{{ inputs.text }}", **fields) -> dict:
    return {"kind": "function", "name": name, "input": {"text": text}, **fields}


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def system(calls, llmasos_home):
    runner, app = make_runner(calls)
    yield runner, app
    runner.close()


def run(system, spec: dict, inputs: dict | None = None, timeout: float = 20) -> dict:
    runner, app = system
    run_id = runner.submit(app, parse(spec), inputs)
    return runner.wait(run_id, timeout)


def test_a_run_passes_data_between_steps_and_commits_each_result(system, calls) -> None:
    spec = flow(
        {
            "shout": fn("upper"),
            "count": fn("count_words", "{{ steps.shout.output.text }} d", needs=["shout"]),
        },
        output={"n": "{{ steps.count.output.words }}", "loud": "{{ steps.shout.output.text }}"},
    )
    done = run(system, spec, {"text": "x y"})
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] == {"n": 3, "loud": "X Y"}
    results = system[0].store.results(done["id"])
    assert results[("shout", WHOLE)].output == {"text": "X Y"}
    assert results[("shout", WHOLE)].finished_at <= results[("count", WHOLE)].started_at
    types = [e["type"] for e in system[0].store.events(done["id"])]
    assert types[0] == "run_created" and types[-1] == "run_succeeded"
    assert types.count("step_succeeded") == 2


def test_independent_branches_run_at_the_same_time(system, calls) -> None:
    both_in = threading.Barrier(2, timeout=5)  # each branch waits for the other: serial runs would time out
    original = calls.enter

    def enter(name: str) -> None:
        if name in ("upper", "count_words"):
            both_in.wait()
        original(name)

    calls.enter = enter
    done = run(system, flow({"a": fn("upper"), "b": fn("count_words")}))
    assert done["status"] == "succeeded", done["error"]


def test_when_skips_a_step_and_what_needs_it(system, calls) -> None:
    spec = flow(
        {
            "a": fn("count_words"),
            "big": fn("upper", needs=["a"], when="steps.a.output.words > 10"),
            "after": fn("upper", "{{ steps.big.output.text }}", needs=["big"]),
            "small": fn("upper", needs=["a"], when="steps.a.output.words <= 10"),
        }
    )
    done = run(system, spec)
    assert done["status"] == "succeeded", done["error"]
    results = system[0].store.results(done["id"])
    assert [results[(s, WHOLE)].status for s in ("big", "after", "small")] == [
        "skipped",
        "skipped",
        "succeeded",
    ]
    assert calls.counts["upper"] == 1


def test_for_each_runs_each_item_within_its_concurrency(system, calls) -> None:
    running, most = [0], [0]
    lock = threading.Lock()
    original = calls.enter

    def enter(name: str) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        original(name)

    calls.enter = enter
    spec = flow(
        {
            "split": fn("split"),
            "each": fn(
                "upper",
                "{{ item }}-{{ index }}",
                needs=["split"],
                for_each={"items": "{{ steps.split.output.parts }}", "concurrency": 2},
            ),
        },
        output="{{ steps.each.output | map(attribute='text') | join(',') }}",
    )
    done = run(system, spec, {"text": "a b c d e"})
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] == "A-0,B-1,C-2,D-3,E-4"
    assert most[0] == 2


def test_retries_with_backoff_then_success(system, calls) -> None:
    calls.fail_times["flaky"] = 2
    spec = flow({"f": fn("flaky", retry={"max_attempts": 3, "backoff_s": 0.05, "backoff_factor": 2})})
    started = time.monotonic()
    done = run(system, spec)
    assert done["status"] == "succeeded", done["error"]
    assert time.monotonic() - started >= 0.15  # 0.05 + 0.1 of backoff
    record = system[0].store.results(done["id"])[("f", WHOLE)]
    assert record.attempts == 3 and calls.counts["flaky"] == 3


def test_a_step_failing_past_its_retries_fails_the_run_and_keeps_what_was_committed(system, calls) -> None:
    calls.fail_times["flaky"] = 5
    spec = flow({"a": fn("upper"), "f": fn("flaky", needs=["a"], retry={"max_attempts": 2, "backoff_s": 0})})
    done = run(system, spec)
    assert done["status"] == "failed"
    assert "step f failed after 2 attempt(s)" in done["error"] and "failed on purpose" in done["error"]
    results = system[0].store.results(done["id"])
    assert results[("a", WHOLE)].output == {"text": "A B C"}
    # resumed: only the failed step runs again, and now it passes
    calls.fail_times["flaky"] = 0
    runner, app = system
    runner.resume(app, done["id"])
    again = runner.wait(done["id"], 10)
    assert again["status"] == "succeeded", again["error"]
    assert calls.counts["upper"] == 1 and calls.counts["flaky"] == 3


def test_on_error_continue_and_a_handler_step(system, calls) -> None:
    calls.fail_times["flaky"] = 10
    spec = flow(
        {
            "f": fn("flaky", on_error="rescue"),
            "rescue": fn("upper", "rescued: {{ steps.f.error }}"),
            "g": fn("flaky", on_error="continue"),
            "after": fn("upper", "{{ steps.g.status }}", needs=["g"]),
        },
        output="{{ steps.rescue.output.text }} / {{ steps.after.output.text }}",
    )
    done = run(system, spec)
    assert done["status"] == "succeeded", done["error"]
    assert done["output"].startswith("RESCUED: ") and done["output"].endswith("/ FAILED")


def test_a_timeout_fails_the_attempt(system, calls) -> None:
    calls.gate["flaky"] = threading.Event()  # never set: the call hangs
    done = run(system, flow({"f": fn("flaky", timeout_s=0.2)}))
    calls.gate["flaky"].set()
    assert done["status"] == "failed" and "timeout of 0.2 s" in done["error"]


def test_a_wait_step_holds_the_run_until_approved(system, calls) -> None:
    runner, app = system
    spec = flow(
        {
            "ask": {"kind": "wait", "output_schema": {"type": "object", "required": ["ok"]}},
            "go": fn("upper", "{{ steps.ask.output.note }}", needs=["ask"]),
        },
        output="{{ steps.go.output.text }}",
    )
    run_id = runner.submit(app, parse(spec))
    assert runner.wait(run_id, 5)["status"] == "waiting"
    with pytest.raises(WorkflowStateError):
        runner.approve(app, run_id, "go", {})
    runner.approve(app, run_id, "ask", {"ok": True, "note": "yes"})
    done = runner.wait(run_id, 10)
    assert done["status"] == "succeeded" and done["output"] == "YES"


def test_cancel_stops_a_run_and_resume_runs_only_what_is_missing(system, calls) -> None:
    runner, app = system
    go = calls.gate["upper"] = threading.Event()
    spec = flow(
        {
            "a": fn("count_words"),
            "b": fn("upper", needs=["a"]),
            "c": fn("count_words", "{{ steps.b.output.text }} more", needs=["b"]),
        },
        output="{{ steps.c.output.words }}",
    )
    run_id = runner.submit(app, parse(spec))
    deadline = time.monotonic() + 10
    while not any(a["step"] == "b" for a in runner.store.attempt_rows(run_id)):
        assert time.monotonic() < deadline, "step b never started"
        time.sleep(0.01)
    threading.Timer(0.2, go.set).start()  # b's call ends on its own; the cancel lets nothing new start
    cancelled = runner.cancel(app, run_id)
    assert cancelled["status"] == "cancelled"
    assert ("c", WHOLE) not in runner.store.results(run_id) and calls.counts["count_words"] == 1
    with pytest.raises(WorkflowStateError):
        runner.cancel(app, run_id)
    runner.resume(app, run_id)
    done = runner.wait(run_id, 10)
    assert done["status"] == "succeeded" and done["output"] == 4
    assert calls.counts["upper"] == 1 and calls.counts["count_words"] == 2  # a and b were not run again


def test_a_sub_workflow_runs_as_a_run_of_its_own(system, calls) -> None:
    runner, app = system
    runner.define(
        app,
        parse(
            {
                "name": "shout",
                "inputs": {"text": {"type": "string"}},
                "steps": {"u": fn("upper")},
                "output": "{{ steps.u.output.text }}",
            }
        ),
    )
    spec = flow(
        {"sub": {"kind": "workflow", "name": "shout", "input": {"text": "{{ inputs.text }}!"}}},
        output="{{ steps.sub.output }}",
    )
    done = run(system, spec)
    assert done["status"] == "succeeded", done["error"] and done["output"] == "A B C!"
    assert runner.store.run(f"{done['id']}.sub")["status"] == "succeeded"


def test_large_outputs_are_stored_apart_from_the_run_record(system, calls) -> None:
    spec = flow({"b": {"kind": "function", "name": "big", "input": {"size": 300_000}}})
    done = run(system, spec)
    assert done["status"] == "succeeded", done["error"]
    store = system[0].store
    row = store.db.execute("SELECT output, blob FROM step_results WHERE run_id = ?", (done["id"],))[0]
    assert row["output"] is None and row["blob"]
    blob = store.blobs / f"{row['blob']}.json"
    assert blob.stat().st_mode & 0o777 == 0o600
    assert store.results(done["id"])[("b", WHOLE)].output == {"blob": "x" * 300_000}


def test_resume_runs_only_the_steps_without_a_committed_result(calls, llmasos_home) -> None:
    """A server died with `a` committed and `b` mid-attempt: a new runner over the same store runs
    `b` again under the same attempt number (so the same idempotency key), and never `a`."""
    runner, app = make_runner(calls)
    spec = parse(flow({"a": fn("upper"), "b": fn("count_words", needs=["a"]), "c": fn("upper", needs=["b"])}))
    run_id = runner.store.create_run(app, spec, {"text": "a b c"})
    runner.store.commit(run_id, "a", WHOLE, "succeeded", output={"text": "A B C"}, attempts=1)
    interrupted = runner.store.start_attempt(run_id, "b", WHOLE)
    runner.store.set_status(run_id, "running")
    fresh = WorkflowRunner(runner.syscalls, RunStore(), runner.registry)
    assert fresh.resume_unfinished() == [run_id]
    done = fresh.wait(run_id, 10)
    assert done["status"] == "succeeded", done["error"]
    assert calls.counts == {"count_words": 1, "upper": 1}
    b_attempts = [a["attempt"] for a in fresh.store.attempt_rows(run_id) if a["step"] == "b"]
    assert b_attempts == [interrupted, interrupted]
    assert fresh.store.reruns_after_commit() == 0
    fresh.close()
