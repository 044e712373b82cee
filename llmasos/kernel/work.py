"""What the kernel holds for a process besides its record (`Work`: the request and its outbox), and
what a process produces (`Event`s: text as it comes, then one final event).

The outbox counts the tokens put in it and the tokens its reader took (`undelivered` is the
difference): the kernel blocks a process whose reader falls too far behind (`kernel/backpressure.py`).
Each counter has one writer: the kernel's thread emits, the one reader takes."""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field

from llmasos.engine.sampling_params import SamplingParams, TokenLogprobs
from llmasos.errors import LLMasOSError


@dataclass(frozen=True)
class Event:
    """What a process produced: text as it comes, then one final event."""

    pid: int
    text: str = ""
    token_ids: tuple[int, ...] = ()
    finished: bool = False
    finish_reason: str | None = None  # stop, length, cancelled, error
    error: LLMasOSError | None = None
    logprobs: tuple[TokenLogprobs, ...] = ()  # one per token id, when the request asked for them


@dataclass
class Work:
    """What the kernel holds for a process besides its record: the request and its outbox."""

    prompt_ids: list[int]
    params: SamplingParams
    cache_namespace: str
    max_concurrent: int = 0  # the app's quota of processes holding the engine at once; 0: no limit
    events: queue.Queue = field(default_factory=queue.Queue)
    in_engine: bool = False  # added to the engine (and not yet removed)
    keep_text: bool = False  # collect the output text in `text` (for audit logs that keep content)
    text: list[str] = field(default_factory=list)
    error: LLMasOSError | None = None  # why it failed, when it did
    # Set by `Kernel.subscribe`: events go to this callback instead of the queue (async servers).
    listener: Callable[[Event], None] | None = None
    tokens_emitted: int = 0  # output tokens put in the outbox (or handed to the listener)
    tokens_taken: int = 0  # of those, the tokens its reader took (a listener's reader says so)
    # The kernel's last look at `tokens_taken` while the process was blocked, and when it moved.
    taken_seen: int = 0
    taken_seen_at: float = 0.0
    kv_kept_while_blocked: bool = False  # blocked with its KV left in the pool (moved out if it runs short)
    times_blocked: int = 0  # how often it waited for its reader

    @property
    def undelivered(self) -> int:
        """Output tokens the process produced that its reader has not taken yet."""
        return self.tokens_emitted - self.tokens_taken

    def emit(self, event: Event) -> None:
        """Deliver one event (the kernel calls this under its lock, so a subscription cannot miss one)."""
        self.tokens_emitted += len(event.token_ids)
        if self.listener is not None:
            self.listener(event)
        else:
            self.events.put(event)
