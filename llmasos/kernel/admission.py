"""Admission and backpressure: bounded queues, token-rate quotas, prompt bounds, and wait estimates.

A process that cannot be queued is refused at once with the reason and a retry-after estimate,
never left to hang. Waits are estimated from the measured service rate: a queued process waits
for the work ahead of it (tokens of processes of its class or more urgent) to be computed at the
rate the engine has been computing tokens, and a refused one is told when that queue will have
drained enough for it to fit.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmasos.errors import ContextWindowExceededError, InvalidRequestError, QuotaExceededError

#: Prompts tokenized at once. The tokenizer holds a core while it runs; two leave the rest of a
#: small machine to the engine, and any more requests wait their turn instead of piling on.
TOKENIZING_THREADS = 2


@dataclass(frozen=True)
class PromptRequest:
    """A prompt as a system call receives it: how to tokenize it, its texts (checked and measured
    before tokenizing), and its text for an audit log that keeps content (built only then)."""

    encode: Callable[[Any], list[int]]
    texts: tuple[str, ...]
    audit_text: Callable[[], str]


@dataclass(frozen=True)
class QueueLimits:
    """Bounds on waiting work. Zero means unlimited."""

    max_queued_total: int = 256
    max_queued_per_app: int = 64


class TokenRateLimiter:
    """Tokens per app over a rolling 60-second window, reserved at admission.

    A process reserves the most it can use (prompt + max_tokens) when it is admitted, so requests
    that arrive together cannot all pass a check that none of them has been charged for yet (20
    concurrent requests of an app allowed 2,000 tokens a minute computed 5,040 in 20 s when tokens
    were only counted as computed). The tokens it computes are drawn from its reservation; what it
    did not use is refunded when it ends (`settle`). Tokens computed without a reservation count
    when they are recorded.
    """

    WINDOW = 60.0

    def __init__(self) -> None:
        # Per app, [time, tokens] entries in time order; a reservation's entry shrinks when settled.
        self._events: dict[str, deque[list]] = defaultdict(deque)
        self._reservations: dict[int, _Reservation] = {}

    def used(self, app: str, now: float) -> int:
        events = self._prune(app, now)
        return sum(n for _, n in events)

    def retry_after(self, app: str, limit: int, tokens: int, now: float) -> float | None:
        """Seconds until `tokens` more fit under `limit`, or None if they fit now."""
        if limit <= 0:
            return None
        if tokens > limit:
            return float("inf")
        used = self.used(app, now)
        if used + tokens <= limit:
            return None
        excess = used + tokens - limit
        for at, n in self._events[app]:
            excess -= n
            if excess <= 0:
                return max(0.0, at + self.WINDOW - now)
        return self.WINDOW

    def reserve(self, app: str, pid: int, tokens: int, now: float) -> None:
        """Charge process `pid` its most tokens now; `record` draws on it, `settle` refunds the rest."""
        entry = [now, tokens]
        self._prune(app, now).append(entry)
        self._reservations[pid] = _Reservation(entry, tokens)

    def record(self, app: str, tokens: int, now: float, pid: int | None = None) -> None:
        """Count `tokens` computed (for process `pid`): from its reservation while it lasts."""
        reservation = self._reservations.get(pid) if pid is not None else None
        if reservation is not None:
            drawn = min(tokens, reservation.left)
            reservation.left -= drawn
            tokens -= drawn
        if tokens:
            self._prune(app, now).append([now, tokens])

    def settle(self, pid: int) -> int:
        """Process `pid` ended: refund what it reserved and did not compute; returns the refund."""
        reservation = self._reservations.pop(pid, None)
        if reservation is None:
            return 0
        reservation.entry[1] -= reservation.left
        return reservation.left

    @property
    def open_reservations(self) -> int:
        return len(self._reservations)

    def _prune(self, app: str, now: float) -> deque[list]:
        """The app's entries within the window; older ones are dropped (also on every append, so an
        app without a quota, whose usage is never asked for, keeps one window's entries, not all)."""
        events = self._events[app]
        while events and events[0][0] <= now - self.WINDOW:
            events.popleft()
        return events


@dataclass
class _Reservation:
    entry: list  # the [time, tokens] entry in the app's window
    left: int  # reserved tokens not yet computed


class PendingAdmissions:
    """Requests that passed the queue and concurrency checks and are still being admitted (their
    prompt tokenized, their model loaded): the checks of the requests behind them count them as
    queued, so concurrent requests cannot all pass a bound that has room for one. Used under the
    kernel's lock."""

    def __init__(self) -> None:
        self._by_app: Counter[str] = Counter()

    def of(self, app: str) -> int:
        return self._by_app[app]

    @property
    def total(self) -> int:
        return self._by_app.total()

    def add(self, app: str) -> None:
        self._by_app[app] += 1

    def remove(self, app: str) -> None:
        self._by_app[app] -= 1
        if self._by_app[app] <= 0:
            del self._by_app[app]


def refuse_if_over_token_quota(
    limiter: TokenRateLimiter, app: str, limit: int, wanted: int, now: float
) -> None:
    """QuotaExceededError when reserving `wanted` more tokens would pass `app`'s tokens per minute."""
    retry = limiter.retry_after(app, limit, wanted, now)
    if retry is None:
        return
    raise QuotaExceededError(
        f"app {app!r} would exceed its {limit} tokens per minute"
        + (
            f"; retry in {retry:.0f} s"
            if retry != float("inf")
            else f": this one request needs {wanted}; lower max_tokens"
        ),
        retry if retry != float("inf") else 60.0,
    )


class ServiceRate:
    """Tokens the engine computes per second, smoothed over recent ticks."""

    def __init__(self, initial: float = 50.0, smoothing: float = 0.1) -> None:
        self.tokens_per_second = initial
        self.smoothing = smoothing

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            rate = tokens / seconds
            self.tokens_per_second += self.smoothing * (rate - self.tokens_per_second)

    def seconds_for(self, tokens: float) -> float:
        return tokens / max(self.tokens_per_second, 1e-6)


def refuse_if_full(
    app: str,
    queued_for_app: int,
    queued_total: int,
    limits: QueueLimits,
    app_max_queued: int,
    tokens_ahead: float,
    rate: ServiceRate,
) -> None:
    """Raise QuotaExceededError when a new process of `app` would overflow a queue bound."""
    bounds = [b for b in (limits.max_queued_per_app, app_max_queued) if b > 0]
    per_app = min(bounds, default=0)
    retry = max(1.0, rate.seconds_for(tokens_ahead))
    if per_app and queued_for_app >= per_app:
        raise QuotaExceededError(
            f"app {app!r} already has {queued_for_app} processes queued (limit {per_app}); "
            f"retry in about {retry:.0f} s",
            retry,
        )
    if limits.max_queued_total and queued_total >= limits.max_queued_total:
        raise QuotaExceededError(
            f"the system queue is full ({queued_total} processes); retry in about {retry:.0f} s",
            retry,
        )


_longest_token: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def longest_token_chars(tokenizer: Any) -> int | None:
    """The most characters one token of `tokenizer` can stand for, or None if it cannot say.

    The vocabulary spells a byte-level BPE token with one character per byte (and a SentencePiece
    token with at least one per character), so the longest entry bounds what a token covers.
    Computed once per tokenizer.
    """
    try:
        return _longest_token[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend", None)
    if backend is None or not hasattr(backend, "get_vocab"):
        return None
    longest = max((len(token) for token in backend.get_vocab(with_added_tokens=True)), default=1)
    with contextlib.suppress(TypeError):
        _longest_token[tokenizer] = max(longest, 1)
    return max(longest, 1)


def refuse_if_prompt_cannot_fit(chars: int, tokenizer: Any, context_length: int, model: str) -> None:
    """ContextWindowExceededError when a prompt of `chars` characters must have more tokens than
    `model`'s context window holds, decided from its length alone, before tokenizing it: even if
    every token covered the longest vocabulary entry, it would not fit. (A 10 MB prompt took 8 s
    to tokenize and stalled every other stream; this answers in microseconds.)"""
    per_token = longest_token_chars(tokenizer)
    if per_token is None:
        return
    fewest_tokens = -(-chars // per_token)
    if fewest_tokens < context_length:
        return
    fits = (context_length - 1) * per_token
    raise ContextWindowExceededError(
        f"the prompt has {chars} characters, so at least {fewest_tokens} tokens, but {model}'s context "
        f"window is {context_length} tokens; shorten it by at least {chars - fits} characters "
        f"(more, in practice: a token covers about 4 characters of English)"
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def invalid_unicode_at(text: str) -> int | None:
    """The index of the first code point that no UTF-8 text can hold (a lone surrogate, which JSON's
    `\\ud800` escapes can produce), or None when `text` is valid."""
    if text.isascii():  # O(1) in CPython; a 4 MB prompt's scan cost 22 ms of the event loop
        return None
    match = _SURROGATE.search(text)
    return match.start() if match else None


def refuse_invalid_unicode(text: str, where: str) -> None:
    """InvalidRequestError naming `where` when `text` holds a lone surrogate: tokenizers reject it
    (it was a 500, `TextInputSequence must be str`)."""
    at = invalid_unicode_at(text)
    if at is not None:
        raise InvalidRequestError(
            f"{where} is not valid Unicode: character {at} is a lone surrogate "
            f"(U+{ord(text[at]):04X}); send text as valid UTF-8"
        )
