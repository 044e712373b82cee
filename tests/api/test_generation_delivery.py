"""Events cross from the kernel's thread to the event loop in bursts, and a stream that fell behind
reads what piled up as one delta per choice, losing and reordering nothing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmasos.api.generation import Generation, LoopDelivery
from llmasos.errors import ClientDisconnectedError
from llmasos.kernel.kernel import Event
from llmasos.kernel.process import PriorityClass, Process
from llmasos.security.apps import App


class FakeSyscalls:
    """Only what a Generation uses: subscriptions (kept, to emit from a thread) and cancel."""

    def __init__(self) -> None:
        self.listeners: dict[int, object] = {}
        self.cancelled: list[int] = []
        self.reasons: list[str] = []
        self.took: list[tuple[int, int]] = []  # (pid, tokens) as the consumer reports them

    def subscribe(self, app: App, pid: int, callback) -> None:
        self.listeners[pid] = callback

    def cancel(self, app: App, pid: int, *, reason: str) -> None:
        self.cancelled.append(pid)

    def abandon(self, app: App, pid: int, reason: str) -> None:
        self.cancelled.append(pid)
        self.reasons.append(reason)

    def taken(self, app: App, pid: int, tokens: int) -> None:
        self.took.append((pid, tokens))


def process(pid: int) -> Process:
    return Process(pid=pid, app="a", model="m", priority=PriorityClass.NORMAL, created_at=0.0)


def test_a_burst_from_another_thread_wakes_the_loop_once_and_keeps_each_queues_order() -> None:
    async def main() -> tuple[list[list[int]], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args, **kwargs):
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        delivery = LoopDelivery.of(loop)
        assert LoopDelivery.of(loop) is delivery
        queues = [asyncio.Queue() for _ in range(3)]
        burst = threading.Thread(target=lambda: [delivery.put(queues[i % 3], i) for i in range(3000)])
        burst.start()
        burst.join()  # the loop did not run meanwhile: one wake-up carries the whole burst
        received = [[await q.get() for _ in range(1000)] for q in queues]
        return received, wakeups

    received, wakeups = asyncio.run(main())
    assert wakeups == 1
    assert received == [list(range(start, 3000, 3)) for start in range(3)]


def test_events_that_piled_up_come_as_one_delta_per_choice_then_the_final_ones() -> None:
    async def main() -> list[tuple[int, Event]]:
        syscalls = FakeSyscalls()
        gen = Generation(syscalls, App("a"), [process(1), process(2)])  # type: ignore[arg-type]

        def kernel_tick() -> None:  # what the kernel's thread emits over a few ticks
            for step in range(4):
                for pid in (1, 2):
                    syscalls.listeners[pid](Event(pid, f"{pid}:{step} ", (10 * pid + step,)))
            syscalls.listeners[1](Event(1, finished=True, finish_reason="length"))
            syscalls.listeners[2](Event(2, "tail", (99,)))
            syscalls.listeners[2](Event(2, finished=True, finish_reason="stop"))

        thread = threading.Thread(target=kernel_tick)
        thread.start()
        thread.join()
        return [(choice.index, event) async for choice, event in gen.events()]

    events = asyncio.run(main())
    text = {i: "".join(e.text for j, e in events if j == i) for i in (0, 1)}
    assert text == {0: "1:0 1:1 1:2 1:3 ", 1: "2:0 2:1 2:2 2:3 tail"}
    tokens = {i: [t for j, e in events if j == i for t in e.token_ids] for i in (0, 1)}
    assert tokens == {0: [10, 11, 12, 13], 1: [20, 21, 22, 23, 99]}
    finals = [(i, e.finish_reason) for i, e in events if e.finished]
    assert finals == [(0, "length"), (1, "stop")]
    assert len(events) == 4  # one delta per choice, then each final event: nothing after a final one
    assert [e.finished for _, e in events] == [False, False, True, True]


def test_an_event_counts_as_taken_only_when_its_consumer_comes_back_for_the_next() -> None:
    """What a stream's body made of an event has been accepted by `send` when the body asks for the
    next one; only then may the kernel compute more for it (kernel/backpressure.py)."""

    async def main() -> list[list[tuple[int, int]]]:
        syscalls = FakeSyscalls()
        gen = Generation(syscalls, App("a"), [process(1)])  # type: ignore[arg-type]
        seen = []
        events = gen.events()
        syscalls.listeners[1](Event(1, "a", (5,)))
        await events.__anext__()
        await asyncio.sleep(0)  # the second event arrives while the first is being sent
        syscalls.listeners[1](Event(1, "bc", (6, 7)))
        await asyncio.sleep(0)
        seen.append(list(syscalls.took))  # the first is not taken while its consumer is away
        await events.__anext__()
        seen.append(list(syscalls.took))  # back for the next: the first one is taken
        syscalls.listeners[1](Event(1, finished=True, finish_reason="stop"))
        await events.__anext__()
        seen.append(list(syscalls.took))
        return seen

    assert asyncio.run(main()) == [[], [(1, 1)], [(1, 1), (1, 2)]]


class LeavingClient:
    """A request whose client is there for its first `present` checks, and gone after."""

    def __init__(self, present: int) -> None:
        self.present = present

    async def is_disconnected(self) -> bool:
        self.present -= 1
        return self.present < 0


@pytest.mark.parametrize("present", [0, 1])
def test_a_client_that_left_during_admission_is_audited_by_its_processes_end_rows(present) -> None:
    """Left before anything was admitted (present=0): nothing to cancel, and the error is the
    request's only record (audited by the error handler). Left while its process was admitted
    (present=1): the server abandons it (its end row records why) and the error needs no row."""

    async def main() -> tuple[ClientDisconnectedError, FakeSyscalls]:
        syscalls = FakeSyscalls()
        with pytest.raises(ClientDisconnectedError) as refused:
            await Generation.start(syscalls, App("a"), 1, lambda i: process(7), LeavingClient(present))
        return refused.value, syscalls

    err, syscalls = asyncio.run(main())
    if present:
        assert syscalls.cancelled == [7] and "disconnected" in syscalls.reasons[0]
        assert err.audited
    else:
        assert syscalls.cancelled == [] and not err.audited
