"""Process records: priority classes, legal state moves, and time and token accounting on a fake clock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmasos.errors import InvalidRequestError, ProcessStateError
from llmasos.kernel.process import PriorityClass, ProcessState
from tests.kernel.sim import make_process

QUEUED, RUNNING, SUSPENDED = ProcessState.QUEUED, ProcessState.RUNNING, ProcessState.SUSPENDED
FINISHED, FAILED, CANCELLED = ProcessState.FINISHED, ProcessState.FAILED, ProcessState.CANCELLED


def test_priority_classes_order_and_parse() -> None:
    assert PriorityClass.REALTIME < PriorityClass.INTERACTIVE < PriorityClass.NORMAL < PriorityClass.BATCH
    assert PriorityClass.parse(" Interactive ") is PriorityClass.INTERACTIVE
    assert PriorityClass.parse(PriorityClass.BATCH) is PriorityClass.BATCH
    assert PriorityClass.REALTIME.is_latency_sensitive and not PriorityClass.NORMAL.is_latency_sensitive
    assert PriorityClass.BATCH.label == "batch"


def test_unknown_priority_class_lists_the_valid_names() -> None:
    with pytest.raises(InvalidRequestError, match="realtime, interactive, normal, batch"):
        PriorityClass.parse("urgent")


def test_terminal_states() -> None:
    assert {s for s in ProcessState if s.is_terminal} == {FINISHED, FAILED, CANCELLED}
    assert str(ProcessState.SUSPENDED) == "suspended"


def test_bad_weight_is_the_callers_error() -> None:
    with pytest.raises(InvalidRequestError, match="weight"):
        make_process(1, weight=0)


def test_waited_and_running_seconds_follow_the_clock() -> None:
    process = make_process(1, created_at=10.0)
    assert process.state is QUEUED and process.waited_at(12.0) == pytest.approx(2.0)
    process.transition(RUNNING, "running", 13.0)
    process.transition(SUSPENDED, "preempted by pid 7 (interactive)", 18.0)
    process.transition(RUNNING, "resumed", 20.0)
    assert process.running_at(21.5) == pytest.approx(6.5)
    process.transition(FINISHED, "done", 22.0)

    assert process.waited_seconds == pytest.approx(5.0)  # 3 queued + 2 suspended
    assert process.running_seconds == pytest.approx(7.0)
    assert process.waited_at(100.0) == pytest.approx(5.0)  # terminal: nothing accrues any more
    assert (process.started_at, process.finished_at) == (13.0, 22.0)
    assert process.turnaround_seconds == pytest.approx(12.0)
    assert process.num_preemptions == 1
    assert process.reason == "done"


def test_reason_updates_within_a_state_keep_accruing() -> None:
    process = make_process(1, created_at=0.0)
    process.transition(QUEUED, "waiting: app over its concurrency quota", 4.0)
    assert process.reason.startswith("waiting: app") and process.waited_at(6.0) == pytest.approx(6.0)


def test_token_counters() -> None:
    process = make_process(1, created_at=0.0, tokens_in=100)
    process.transition(RUNNING, "running", 1.0)
    process.record_computed(64)
    process.record_computed(36)
    process.record_output(1, 2.0)
    process.record_output(1, 3.0)
    assert (process.tokens_computed, process.tokens_since_scheduled, process.tokens_out) == (100, 100, 2)
    assert process.time_to_first_token == pytest.approx(2.0)
    process.transition(SUSPENDED, "preempted", 4.0)
    process.transition(RUNNING, "resumed", 5.0)
    assert process.tokens_since_scheduled == 0 and process.last_scheduled_at == 5.0
    assert process.tokens_computed == 100


@pytest.mark.parametrize("terminal", [FINISHED, FAILED, CANCELLED])
def test_terminal_processes_cannot_move(terminal: ProcessState) -> None:
    process = make_process(1, created_at=0.0)
    process.transition(RUNNING, "running", 1.0)
    process.transition(terminal, "over", 2.0)
    for target in ProcessState:
        with pytest.raises(ProcessStateError, match=f"process 1 is {terminal}"):
            process.transition(target, "again", 3.0)


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], FINISHED),  # a queued process never ran, so it cannot have finished
        ([], SUSPENDED),  # nothing to suspend
        ([RUNNING, SUSPENDED], QUEUED),  # "queued" means never ran
        ([RUNNING, SUSPENDED], FINISHED),  # it must run to finish
    ],
)
def test_illegal_moves_are_refused(path: list[ProcessState], illegal: ProcessState) -> None:
    process = make_process(1, created_at=0.0)
    for t, state in enumerate(path, start=1):
        process.transition(state, "step", float(t))
    with pytest.raises(ProcessStateError, match="cannot become"):
        process.transition(illegal, "nope", 10.0)
    assert process.state is (path[-1] if path else QUEUED)


def test_queued_process_can_be_cancelled() -> None:
    process = make_process(1, created_at=0.0)
    process.transition(CANCELLED, "cancelled by the app", 3.0)
    assert process.is_terminal and process.started_at is None and process.waited_seconds == 3.0


def test_clock_going_backwards_is_refused() -> None:
    process = make_process(1, created_at=5.0)
    with pytest.raises(ValueError, match="backwards"):
        process.transition(RUNNING, "running", 4.0)


def test_the_process_table_and_policies_do_not_need_torch() -> None:
    code = "import sys, llmasos.kernel.policies, llmasos.kernel.process; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
