"""A fake clock and a tiny fake engine that drive a scheduling policy the way the kernel will.

Each step: the policy selects; chosen processes that were not running are admitted or resumed, running
ones that were not chosen are suspended; then every chosen process computes its next prompt chunk
(`prefill_chunk` tokens) or, once its prompt is done, one decode token, and finishes after its output
length. The clock advances `step_seconds` per step. Every step checks the policy's basic promises.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from llmasos.engine.work_cost import TOKENS_ONLY, WorkCost
from llmasos.kernel.policies import Policy
from llmasos.kernel.process import PriorityClass, Process, ProcessState


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def make_process(
    pid: int,
    app: str = "app",
    priority: PriorityClass | str = PriorityClass.NORMAL,
    created_at: float = 0.0,
    weight: float = 1.0,
    tokens_in: int = 0,
) -> Process:
    return Process(
        pid=pid,
        app=app,
        model="tiny",
        priority=PriorityClass.parse(priority),
        created_at=created_at,
        weight=weight,
        tokens_in=tokens_in,
    )


@dataclass
class Job:
    process: Process
    prompt_left: int
    output_left: int


class FakeEngineSim:
    def __init__(
        self,
        policy: Policy,
        slots: int,
        prefill_chunk: int = 64,
        step_seconds: float = 0.01,
        work_cost: WorkCost = TOKENS_ONLY,
    ) -> None:
        """work_cost: how the engine weighs each computed token by its position (charged to the policy,
        as `Kernel._account` does with the engine's figure); by default, every token is 1."""
        self.policy = policy
        self.work_cost = work_cost
        self.slots = slots
        self.prefill_chunk = prefill_chunk
        self.step_seconds = step_seconds
        self.clock = FakeClock()
        self.jobs: dict[int, Job] = {}  # live only
        self.finished: list[Process] = []
        self.tokens_by_app: Counter[str] = Counter()
        self.last_selected: list[Process] = []
        self._next_pid = 1

    def submit(
        self,
        app: str,
        prompt: int = 0,
        output: int = 10,
        priority: PriorityClass | str = PriorityClass.NORMAL,
        weight: float = 1.0,
    ) -> Process:
        process = make_process(self._next_pid, app, priority, self.clock.now, weight, prompt)
        self._next_pid += 1
        self.jobs[process.pid] = Job(process, prompt, output)
        return process

    def live(self, app: str | None = None) -> list[Process]:
        return [j.process for j in self.jobs.values() if app is None or j.process.app == app]

    def step(self) -> list[Process]:
        now = self.clock.now
        table = [j.process for j in self.jobs.values()] + self.finished[-8:]  # terminal ones are ignored
        selected = self.policy.select(table, self.slots, now)
        self._check(selected)
        self._switch(selected, now)
        end = self.clock.advance(self.step_seconds)
        for process in selected:
            self._compute(self.jobs[process.pid], end)
        self.last_selected = selected
        return selected

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def _check(self, selected: list[Process]) -> None:
        assert len(selected) <= self.slots
        assert len({p.pid for p in selected}) == len(selected), "a process selected twice"
        assert all(not p.is_terminal for p in selected), "a terminal process selected"

    def _switch(self, selected: list[Process], now: float) -> None:
        chosen = {p.pid for p in selected}
        for job in self.jobs.values():
            process = job.process
            if process.pid in chosen and process.state is not ProcessState.RUNNING:
                process.transition(ProcessState.RUNNING, "running", now)
            elif process.pid not in chosen and process.state is ProcessState.RUNNING:
                process.transition(ProcessState.SUSPENDED, "preempted", now)

    def _compute(self, job: Job, now: float) -> None:
        process = job.process
        if job.prompt_left:
            tokens = min(self.prefill_chunk, job.prompt_left)
            work = self.work_cost.prefill(process.tokens_in - job.prompt_left, tokens)
            job.prompt_left -= tokens
        else:  # the last sampled token, after the prompt and the outputs before it
            tokens = 1
            work = self.work_cost.decode(process.tokens_in + process.tokens_out - 1)
        process.record_computed(tokens, work)
        self.policy.charge(process, work, now)
        self.tokens_by_app[process.app] += tokens
        if job.prompt_left == 0:  # the step that ends the prompt samples the first output token
            process.record_output(1, now)
            job.output_left -= 1
            if job.output_left == 0:
                process.transition(ProcessState.FINISHED, "done", now)
                self.finished.append(process)
                del self.jobs[process.pid]
