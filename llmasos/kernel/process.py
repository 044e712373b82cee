"""A process: the kernel's record of one unit of work of one app.

A process is what `ps` shows and what scheduling policies reason about: who owns it, how urgent it is,
what state it is in and why, and how much it has waited, run and computed. The engine's token state of
the same generation is its *sequence* (`engine/sequence.py`); nothing here imports torch.

Time is monotonic seconds from a clock the kernel injects, so tests drive it with a fake clock. Time
spent in each state is accumulated at every `transition`; the stretch in progress is added on read by
`waited_at(now)` / `running_at(now)`, so nothing has to tick to keep the counters right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from llmasos.errors import InvalidRequestError, ProcessStateError


class PriorityClass(IntEnum):
    """How urgent a process is; a lower value is more urgent."""

    REALTIME = 0
    INTERACTIVE = 1
    NORMAL = 2
    BATCH = 3

    @classmethod
    def parse(cls, name: str | PriorityClass) -> PriorityClass:
        """The class called `name` (case-insensitive), e.g. from a config file or a CLI flag."""
        if isinstance(name, PriorityClass):
            return name
        try:
            return cls[str(name).strip().upper()]
        except KeyError:
            valid = ", ".join(member.label for member in cls)
            raise InvalidRequestError(f"unknown priority class {name!r}; use one of: {valid}") from None

    @property
    def label(self) -> str:
        """The lower-case name users write and `ps` shows."""
        return self.name.lower()

    @property
    def is_latency_sensitive(self) -> bool:
        """A person (or a deadline) is waiting on every token of this class."""
        return self <= PriorityClass.INTERACTIVE


class ProcessState(StrEnum):
    QUEUED = "queued"  # admitted, never run yet
    RUNNING = "running"  # holds a batch slot in the engine
    SUSPENDED = "suspended"  # ran, lost its slot; its KV state is saved or dropped for recompute
    # Its reader has not taken its output: not runnable until it does (its KV waits as a suspended
    # process's does). Time here is neither waited nor run: the kernel is not what holds it back.
    BLOCKED = "blocked"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_waiting(self) -> bool:
        """Live but not running: the time spent here is the process's wait."""
        return self is ProcessState.QUEUED or self is ProcessState.SUSPENDED


_TERMINAL = frozenset({ProcessState.FINISHED, ProcessState.FAILED, ProcessState.CANCELLED})

# The moves the kernel may make. A live state may "move" to itself to update its reason. A queued
# process cannot finish without running, and a running one is suspended (not re-queued) when it loses
# its slot, so "queued" always means "never ran". Only a process that ran can have output to block on.
_ALLOWED_MOVES: dict[ProcessState, frozenset[ProcessState]] = {
    ProcessState.QUEUED: frozenset(
        {ProcessState.QUEUED, ProcessState.RUNNING, ProcessState.FAILED, ProcessState.CANCELLED}
    ),
    ProcessState.RUNNING: frozenset(
        {ProcessState.RUNNING, ProcessState.SUSPENDED, ProcessState.BLOCKED, *_TERMINAL}
    ),
    ProcessState.SUSPENDED: frozenset(
        {
            ProcessState.SUSPENDED,
            ProcessState.RUNNING,
            ProcessState.BLOCKED,
            ProcessState.FAILED,
            ProcessState.CANCELLED,
        }
    ),
    # Unblocked, a process is ready again: suspended until the policy gives it a slot.
    ProcessState.BLOCKED: frozenset(
        {ProcessState.BLOCKED, ProcessState.SUSPENDED, ProcessState.FAILED, ProcessState.CANCELLED}
    ),
}


@dataclass(eq=False, slots=True, kw_only=True)
class Process:
    """One unit of work of one app. Identity is the object (and its pid), never its field values.

    Policies read processes and never write them; only the kernel calls `transition` and the
    `record_*` methods.
    """

    pid: int
    app: str
    model: str
    priority: PriorityClass
    created_at: float
    weight: float = 1.0  # the app's share weight, copied at creation
    app_id: str = ""  # the app's `App.identity`: who may see it (a name can pass to a new app; this never)
    tokens_in: int = 0  # prompt tokens
    state: ProcessState = ProcessState.QUEUED
    reason: str = "waiting for a batch slot"
    started_at: float | None = None  # first time it ran
    first_token_at: float | None = None  # first output token, for time-to-first-token
    finished_at: float | None = None  # when it reached a terminal state
    last_scheduled_at: float | None = None  # last move into RUNNING
    tokens_out: int = 0  # tokens generated (sampled)
    tokens_computed: int = 0  # prefill + decode tokens the engine computed: the unit of fair share
    tokens_since_scheduled: int = 0  # computed since the last move into RUNNING
    # What each of its tokens cost in its last step, in work (engine/work_cost.py: a token that attends
    # to a long context costs more): what its next one is expected to cost.
    work_per_token: float = 1.0
    num_preemptions: int = 0  # times it lost its slot while running
    node: str = ""  # the cluster node running it now ("" on a single box)
    waited_seconds: float = 0.0  # closed stretches queued or suspended
    running_seconds: float = 0.0  # closed stretches running
    _state_since: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.priority = PriorityClass.parse(self.priority)
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise InvalidRequestError(f"process weight must be a positive number, got {self.weight!r}")
        if self.tokens_in < 0:
            raise InvalidRequestError(f"tokens_in must be >= 0, got {self.tokens_in}")
        if self.state is not ProcessState.QUEUED:
            raise ValueError("a process is created queued; move it with transition()")
        self._state_since = self.created_at

    # -- derived values ------------------------------------------------------------------------------

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def state_since(self) -> float:
        """When the process entered its current state."""
        return self._state_since

    @property
    def turnaround_seconds(self) -> float | None:
        """Creation to terminal state; None while live."""
        return None if self.finished_at is None else self.finished_at - self.created_at

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.created_at

    def waited_at(self, now: float) -> float:
        """Total seconds queued or suspended, including the stretch in progress."""
        open_stretch = now - self._state_since if self.state.is_waiting else 0.0
        return self.waited_seconds + max(open_stretch, 0.0)

    def running_at(self, now: float) -> float:
        """Total seconds running, including the stretch in progress."""
        open_stretch = now - self._state_since if self.state is ProcessState.RUNNING else 0.0
        return self.running_seconds + max(open_stretch, 0.0)

    # -- changes (kernel only) -----------------------------------------------------------------------

    def transition(self, new_state: ProcessState, reason: str, now: float) -> None:
        """Move to `new_state` at time `now`, closing the time stretch of the old state."""
        if new_state not in _ALLOWED_MOVES.get(self.state, frozenset()):
            raise ProcessStateError(
                f"process {self.pid} is {self.state} ({self.reason}); it cannot become {new_state}"
            )
        if now < self._state_since:
            raise ValueError(f"clock went backwards: {now} < {self._state_since} (process {self.pid})")
        self._close_stretch(now)
        old_state, self.state, self.reason = self.state, new_state, reason
        if new_state is ProcessState.RUNNING and old_state is not ProcessState.RUNNING:
            self.started_at = now if self.started_at is None else self.started_at
            self.last_scheduled_at = now
            self.tokens_since_scheduled = 0
        if old_state is ProcessState.RUNNING and new_state is ProcessState.SUSPENDED:
            self.num_preemptions += 1
        if new_state.is_terminal:
            self.finished_at = now

    def record_computed(self, tokens: int, work: float | None = None) -> None:
        """The engine computed `tokens` (prefill chunk and/or decode) for this process in one step, at a
        cost of `work` (None: a token each)."""
        if tokens < 0:
            raise ValueError(f"computed tokens must be >= 0, got {tokens}")
        self.tokens_computed += tokens
        self.tokens_since_scheduled += tokens
        if tokens and work is not None and math.isfinite(work) and work > 0:
            self.work_per_token = work / tokens

    def record_output(self, tokens: int, now: float) -> None:
        """`tokens` new tokens were sampled for this process."""
        if tokens < 0:
            raise ValueError(f"output tokens must be >= 0, got {tokens}")
        if tokens and self.first_token_at is None:
            self.first_token_at = now
        self.tokens_out += tokens

    def _close_stretch(self, now: float) -> None:
        elapsed = now - self._state_since
        if self.state is ProcessState.RUNNING:
            self.running_seconds += elapsed
        elif self.state.is_waiting:
            self.waited_seconds += elapsed
        self._state_since = now
