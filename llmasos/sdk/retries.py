"""When the SDK tries a request again: on 429 and 503 and on connection errors, with exponential
backoff, honouring the server's `Retry-After` (as the official openai client does).

`max_retries` (default 2, as openai's) counts the tries after the first. A `Retry-After` of up to
`max_retry_after` seconds is waited out; a longer one (a spent per-minute quota, say) is not: the
error is raised at once with its `retry_after`, for the caller to decide.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

#: Statuses that mean "not now": a full queue or spent quota (429), a model that cannot load now (503).
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2  # tries after the first; 0 never retries
    initial_delay: float = 0.5  # seconds before the first retry without Retry-After, doubling after
    max_delay: float = 8.0  # the longest backoff without Retry-After
    max_retry_after: float = 60.0  # the longest Retry-After waited out

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float | None:
        """Seconds to wait before retry number `attempt` (0-based), or None not to retry."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if response.status_code not in RETRY_STATUSES:
                return None
            asked = retry_after_seconds(response.headers)
            if asked is not None:
                return asked if asked <= self.max_retry_after else None
        backoff = min(self.initial_delay * 2**attempt, self.max_delay)
        return backoff * (1 - 0.25 * random.random())  # jitter: clients refused together spread out

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None when absent or unreadable."""
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
