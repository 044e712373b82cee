"""Failed authentication, bounded: per client address, exponential backoff and aggregate audit rows.

Without it, 3,000 requests with a bad key were 3,000 audit rows (+17 MB) at ~390 guesses a second.
Now each address gets `free_failures` failures a window; every failure past them locks the address
out for twice as long as the one before (1 s, 2 s, 4 s, ... up to `max_lockout`), and while it is
locked out its requests are answered 429 without their key being looked up. The first
`audited_per_window` failures of an address in a window are audit rows of their own; the rest are
one summary row per address and window.

Every client on a loopback server shares 127.0.0.1, so a key that has authenticated recently passes
a lockout (it is checked as usual): an app that was working keeps working while another client on
the same address guesses. Nobody can guess their way into that set without a valid key.

All state is bounded: at most `max_addresses` addresses (the least recently failing are forgotten
first) and `remembered_keys` key digests.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class FailedAuthPolicy:
    """How failed authentication is limited and audited."""

    free_failures: int = 10  # failures per address and window before the first lockout
    first_lockout_seconds: float = 1.0  # doubled by each further failure
    max_lockout_seconds: float = 300.0
    window_seconds: float = 60.0  # also how long an address stays remembered after its last failure
    audited_per_window: int = 10  # failures written one row each; the rest are summarized
    max_addresses: int = 4096
    remembered_keys: int = 1024


@dataclass
class FailureSummary:
    """One window of one address's failures beyond those audited one by one: an audit row."""

    address: str
    started: float  # time.time() of the window's start
    seconds: float
    failures: int  # checked and wrong
    audited: int  # of those, written one by one
    throttled: int  # refused during a lockout without being checked


@dataclass
class _Address:
    window_start: float
    wall_start: float
    last_failure: float
    failures: int = 0
    audited: int = 0
    throttled: int = 0
    strikes: int = 0  # failures past the free ones, ever (until forgotten): the backoff's exponent
    locked_until: float = 0.0
    checking: int = 0  # keys being looked up now

    def summary(self, address: str, now: float) -> FailureSummary | None:
        if self.failures <= self.audited and not self.throttled:
            return None
        return FailureSummary(
            address, self.wall_start, now - self.window_start, self.failures, self.audited, self.throttled
        )


class FailedAuthGuard:
    def __init__(
        self, policy: FailedAuthPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or FailedAuthPolicy()
        self.clock = clock
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._good_keys: OrderedDict[bytes, None] = OrderedDict()
        self._pending: list[FailureSummary] = []  # summaries of addresses forgotten to make room

    @staticmethod
    def digest(key: str | None) -> bytes | None:
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest() if key else None

    def retry_after(self, address: str, key_digest: bytes | None) -> float | None:
        """Seconds the address is still locked out for (counting this request as throttled), or
        None when its key may be checked now."""
        if key_digest is not None and key_digest in self._good_keys:
            return None
        entry = self._addresses.get(address)
        now = self.clock()
        if entry is None:
            return None
        if now < entry.locked_until:
            entry.throttled += 1
            return entry.locked_until - now
        return None

    def checking(self, address: str) -> None:
        """A key from `address` is being looked up (`checked` when done). The middleware lets at most
        `free_failures` lookups of one address run at once and holds the rest until one ends, so a
        burst of a thousand bad keys is not all checked before the first failure is known, while a
        burst of good ones (every app on loopback shares 127.0.0.1) waits instead of being refused."""
        self._entry(address, self.clock()).checking += 1

    def checked(self, address: str) -> None:
        entry = self._addresses.get(address)
        if entry is not None and entry.checking > 0:
            entry.checking -= 1

    def failed(self, address: str) -> bool:
        """A key from `address` was checked and wrong. True when this failure gets a row of its own."""
        policy = self.policy
        now = self.clock()
        entry = self._entry(address, now)
        entry.failures += 1
        entry.last_failure = now
        if entry.failures > policy.free_failures:
            entry.strikes += 1
            lockout = policy.first_lockout_seconds * 2 ** min(entry.strikes - 1, 30)
            entry.locked_until = now + min(policy.max_lockout_seconds, lockout)
        if entry.audited < policy.audited_per_window:
            entry.audited += 1
            return True
        return False

    def succeeded(self, key_digest: bytes | None) -> None:
        if key_digest is None:
            return
        self._good_keys[key_digest] = None
        self._good_keys.move_to_end(key_digest)
        while len(self._good_keys) > self.policy.remembered_keys:
            self._good_keys.popitem(last=False)

    def finished_windows(self, *, everything: bool = False) -> list[FailureSummary]:
        """Summaries of windows that have ended (all open ones too with `everything`, at shutdown),
        each returned once; addresses quiet for a window after their lockout are forgotten."""
        now = self.clock()
        window = self.policy.window_seconds
        done, self._pending = self._pending, []
        for address, entry in list(self._addresses.items()):
            if not everything and now - entry.window_start < window:
                continue
            summary = entry.summary(address, now)
            if summary is not None:
                done.append(summary)
            if everything or now - max(entry.last_failure, entry.locked_until) >= window:
                del self._addresses[address]
            else:
                self._roll(entry, now)
        return done

    @property
    def addresses(self) -> int:
        return len(self._addresses)

    def _entry(self, address: str, now: float) -> _Address:
        entry = self._addresses.get(address)
        if entry is None:
            while len(self._addresses) >= self.policy.max_addresses:
                old_address, old = self._addresses.popitem(last=False)
                summary = old.summary(old_address, now)
                if summary is not None:
                    self._pending.append(summary)
            entry = _Address(window_start=now, wall_start=time.time(), last_failure=now)
            self._addresses[address] = entry
        elif now - entry.window_start >= self.policy.window_seconds:
            summary = entry.summary(address, now)
            if summary is not None:
                self._pending.append(summary)
            self._roll(entry, now)
        self._addresses.move_to_end(address)
        return entry

    @staticmethod
    def _roll(entry: _Address, now: float) -> None:
        """Start a new window; the strikes (and the lockout) carry over."""
        entry.window_start, entry.wall_start = now, time.time()
        entry.failures = entry.audited = entry.throttled = 0
