"""Quotas that reserve: concurrent requests cannot all pass a check that none has been charged for.

Reproduction (issue 20): an app with `--tokens-per-minute 2000` ran 20 concurrent requests of
max_tokens 300 to 5,040 tokens in 20 s. Here the same over the scripted engine, where "concurrent"
means admitted before the kernel computed anything.
"""

from __future__ import annotations

import threading
import time

import pytest

from llmasos.errors import ContextWindowExceededError, InvalidRequestError, QuotaExceededError
from llmasos.kernel import admission
from llmasos.kernel.generation_calls import INLINE_TOKENIZING_CHARS
from llmasos.security.apps import App
from tests.kernel.test_kernel import make_kernel, params


def _try(fn):
    try:
        return fn()
    except QuotaExceededError as err:
        return err


def test_twenty_requests_at_once_stay_within_the_token_quota() -> None:
    kernel, sys, _ = make_kernel(slots=32)
    app = App("metered", tokens_per_minute=2000, max_queued=0)
    outcomes = [_try(lambda: sys.generate(app, "m", "x" * 10, params(300))) for _ in range(20)]
    admitted = [o for o in outcomes if not isinstance(o, QuotaExceededError)]
    refused = [o for o in outcomes if isinstance(o, QuotaExceededError)]
    assert len(admitted) == 2000 // (10 + 300)  # each reserves its 10 prompt tokens + 300
    assert refused and all("tokens per minute" in str(e) and e.retry_after > 0 for e in refused)
    kernel.run_until_idle()
    computed = kernel.counters.snapshot()["apps"]["metered"]["tokens_computed"]
    assert computed <= 2000


def test_what_a_process_did_not_use_is_refunded_when_it_ends() -> None:
    kernel, sys, _ = make_kernel()
    app = App("metered", tokens_per_minute=1000)
    first = sys.generate(app, "m", "x" * 10, params(900))
    with pytest.raises(QuotaExceededError):
        sys.generate(app, "m", "x" * 10, params(100))  # 910 reserved + 110 > 1000
    for _ in range(3):
        kernel.tick()
    sys.cancel(app, first.pid)
    used = kernel.limiter.used("metered", kernel.clock())
    assert used == kernel.counters.snapshot()["apps"]["metered"]["tokens_computed"] < 100
    assert kernel.limiter.open_reservations == 0
    sys.generate(app, "m", "x" * 10, params(100))  # fits now


def test_a_finished_process_is_charged_exactly_what_it_computed() -> None:
    kernel, sys, _ = make_kernel()
    app = App("metered", tokens_per_minute=10_000)
    sys.generate(app, "m", "x" * 10, params(5))
    kernel.run_until_idle()
    computed = kernel.counters.snapshot()["apps"]["metered"]["tokens_computed"]
    assert kernel.limiter.used("metered", kernel.clock()) == computed > 0


def test_limiter_window_stays_bounded_for_apps_without_a_quota() -> None:
    limiter = admission.TokenRateLimiter()
    for second in range(10_000):
        limiter.record("free", 3, float(second))
    assert len(limiter._events["free"]) <= admission.TokenRateLimiter.WINDOW + 1


def test_concurrent_admissions_cannot_pass_max_queued_together() -> None:
    """Ten threads whose prompts are all being tokenized at once: the queue bound holds."""
    kernel, sys, engines = make_kernel()
    kernel.residency.acquire("m")
    kernel.residency.release("m")
    tokenizer = engines["m"].tokenizer
    release = threading.Event()
    encode = tokenizer.encode

    def slow_encode(text: str) -> list[int]:
        release.wait(10)
        return encode(text)

    tokenizer.encode = slow_encode
    app = App("bursty", max_concurrent=1, max_queued=1)
    outcomes: list = []

    def call() -> None:
        outcomes.append(_try(lambda: sys.generate(app, "m", "hi", params(3))))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    while len(outcomes) < 8:  # the ones that cannot fit are refused while two are tokenized
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join()
    admitted = [o for o in outcomes if not isinstance(o, QuotaExceededError)]
    assert len(admitted) == 1  # the first, while being admitted, already fills max_queued 1


def test_a_prompt_far_over_the_context_is_refused_before_tokenizing(tiny_loaded) -> None:
    tokenizer = tiny_loaded.tokenizer
    with pytest.raises(ContextWindowExceededError, match=r"shorten it by at least \d+ characters"):
        admission.refuse_if_prompt_cannot_fit(10_000_000, tokenizer, 256, "tiny")
    admission.refuse_if_prompt_cannot_fit(256, tokenizer, 256, "tiny")  # may fit: left to the tokenizer


def test_a_lone_surrogate_in_a_prompt_is_a_clear_error() -> None:
    _, sys, _ = make_kernel()
    with pytest.raises(InvalidRequestError, match="lone surrogate"):
        sys.generate(App("a"), "m", "a\ud800b", params(3))
    with pytest.raises(InvalidRequestError, match="lone surrogate"):
        sys.chat(App("a"), "m", [{"role": "user", "content": "a\udfffb"}], params(3))


def test_a_short_prompt_is_tokenized_in_the_admitting_thread_and_a_long_one_on_the_pool(monkeypatch) -> None:
    """No hop to a tokenizer thread for a prompt that takes less to tokenize than the hop; a long
    one still goes to the small pool (never the kernel's thread or the event loop)."""
    kernel, sys, engines = make_kernel()
    kernel.residency.acquire("m")
    kernel.residency.release("m")
    engines["m"].context_length = engines["m"].max_sequence_tokens = 3 * INLINE_TOKENIZING_CHARS
    tokenizer = type(engines["m"].tokenizer)
    real_encode = tokenizer.encode
    threads: list[str] = []

    def encode(self, text: str) -> list[int]:
        threads.append(threading.current_thread().name)
        return real_encode(self, text)

    monkeypatch.setattr(tokenizer, "encode", encode)
    app = App("a")
    sys.generate(app, "m", "x" * INLINE_TOKENIZING_CHARS, params(1))
    sys.generate(app, "m", "x" * (INLINE_TOKENIZING_CHARS + 1), params(1))
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("llmasos-tokenize")


def test_a_request_over_the_token_quota_is_refused_before_its_prompt_is_tokenized(monkeypatch) -> None:
    """The over-quota attacker's refused requests cost no tokenizing: `max_tokens` + 1 (the least a
    request can reserve) is checked against the quota first."""
    _, sys, engines = make_kernel()
    app = App("metered", tokens_per_minute=1000)
    sys.generate(app, "m", "x" * 10, params(900))
    encoded: list[str] = []
    tokenizer = type(engines["m"].tokenizer)
    real_encode = tokenizer.encode

    def spied(self, text: str) -> list[int]:
        encoded.append(text)
        return real_encode(self, text)

    monkeypatch.setattr(tokenizer, "encode", spied)
    with pytest.raises(QuotaExceededError, match="tokens per minute"):
        sys.generate(app, "m", "a long prompt " * 100, params(100))  # 910 reserved + 101 > 1000
    assert encoded == []
    sys.generate(App("other", tokens_per_minute=1000), "m", "y", params(100))  # another app's: tokenized
    assert encoded == ["y"]


def test_requests_that_arrive_together_are_refused_before_tokenizing_once_their_least_fills_the_quota(
    monkeypatch,
) -> None:
    """The quota attack (issue 20): 20 requests of max_tokens 300 arriving together all passed the
    pre-tokenizer check, since none was charged until tokenized, and all 20 were tokenized. Each
    one's least (max_tokens + 1) is now held from that check until its real reservation replaces it,
    so 2000 // 301 pass it and the other 14 are refused while the first are still tokenizing."""
    kernel, sys, engines = make_kernel(slots=32)
    app = App("metered", tokens_per_minute=2000, max_queued=0)
    kernel.residency.acquire("m")  # loaded before the requests, as on a server that serves it
    kernel.residency.release("m")
    tokenizer = type(engines["m"].tokenizer)
    real_encode = tokenizer.encode
    release = threading.Event()
    encoded: list[str] = []

    def held(self, text: str) -> list[int]:  # tokenizing waits until the test lets it go on
        encoded.append(text)
        release.wait(10)
        return real_encode(self, text)

    monkeypatch.setattr(tokenizer, "encode", held)
    outcomes: list[object] = []

    def request() -> None:
        outcomes.append(_try(lambda: sys.generate(app, "m", "x" * 10, params(300))))

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(outcomes) < 20 - 2000 // 301 and time.monotonic() < deadline:
        time.sleep(0.01)
    refused_while_tokenizing = sum(isinstance(o, QuotaExceededError) for o in outcomes)
    release.set()
    for thread in threads:
        thread.join(10)
    assert refused_while_tokenizing == 20 - 2000 // 301
    assert len(encoded) == 2000 // 301
    admitted = [o for o in outcomes if not isinstance(o, QuotaExceededError)]
    assert len(admitted) == 2000 // (10 + 300)
    assert kernel.limiter.used("metered", kernel.clock()) == len(admitted) * 310  # no provisional left
