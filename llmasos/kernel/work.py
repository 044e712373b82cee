"""What the kernel holds for a process besides its record (`Work`: the request and its outbox), and
what a process produces (`Event`s: text as it comes, then one final event)."""

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

    def emit(self, event: Event) -> None:
        """Deliver one event (the kernel calls this under its lock, so a subscription cannot miss one)."""
        if self.listener is not None:
            self.listener(event)
        else:
            self.events.put(event)
