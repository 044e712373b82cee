"""The windows of `abuse.py`: the calm app's streams timed alone and beside an attack, in interleaved
pairs (calm, attack, calm, attack, ...), with what the server did in each window, and the verdict.

One 6 s window swung by 0.5x from run to run on this shared machine, so one pair says little: each
attack's figure is the median of its pairs' ratios (each attack window against the calm window just
before it), printed with their range, and the verdict is the median's against the goal.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from abuse_attacks import CALM_CHAT
from load_phases import StepFigures
from server_load import step_figures, thread_cpu_seconds

#: The goal of issue 20: the calm app's p95 stream time under attack within this factor of its calm one.
GOAL_RATIO = 1.5
#: How often the event loop's responsiveness is probed (a GET /healthz, answered by the loop alone).
PROBE_SECONDS = 0.1


@dataclass
class Calm:
    """The well-behaved app's streams: each one's whole time, and every gap between two chunks."""

    streams: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    # Per stream, where its time went (PHASES): a slow stream shows which step of a request stalled.
    phases: list[tuple[float, ...]] = field(default_factory=list)


#: The phases of a calm stream, in order: the response's headers (admission and its audit start row),
#: the first chunk (the role's, sent once admitted), the first token's, the last token's, `[DONE]`
#: (sent after the end row is written).
PHASES = ("headers", "role", "first token", "last token", "done")


@dataclass
class Window:
    """One timed window: the calm app's streams, and what the server did meanwhile."""

    calm: Calm
    seconds: float
    loop_cpu: float  # CPU seconds of the server's main thread (its HTTP event loop)
    other_cpu: float  # CPU seconds of its other threads (the kernel, OpenMP workers, pools)
    steps: StepFigures  # the engine's steps in the window
    probes: list[float]  # seconds each GET /healthz took: the event loop's lag plus a request's cost
    computed: Counter  # tokens the engine computed (prompt and output) in the window, by app
    started: float = 0.0  # time.monotonic() when the window opened
    # The calm app's processes ended in the window, from the kernel's histograms (kernel_latency)
    kernel: Counter = field(default_factory=Counter)

    @property
    def stream_p95(self) -> float:
        return p95(self.calm.streams)

    @property
    def gap_p95(self) -> float:
        return p95(self.calm.gaps)


@dataclass
class Pair:
    calm: Window
    attack: Window
    stats: dict  # what the attacker saw (answers by status, streams opened, ...)

    @property
    def ratio(self) -> float:
        return self.attack.stream_p95 / self.calm.stream_p95


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def calm_streams(url: str, key: str, until: Callable[[], bool], clients: int = 2) -> Calm:
    """The calm app's streaming chats, back to back, until `until()` says to stop."""
    calm = Calm()
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:

        async def loop() -> None:
            while not until():
                started = last = time.perf_counter()
                gaps = []
                async with c.stream("POST", "/v1/chat/completions", json=CALM_CHAT) as r:
                    marks = [time.perf_counter()]  # headers, then each chunk's arrival
                    async for line in r.aiter_lines():
                        if not line:
                            continue
                        now = time.perf_counter()
                        gaps.append(now - last)
                        marks.append(now)
                        last = now
                        if line == "data: [DONE]":
                            break
                if r.status_code == 200:
                    calm.streams.append(time.perf_counter() - started)
                    calm.gaps.extend(gaps[1:])  # the first is the time to first token
                    if len(marks) >= 5:  # headers, role, a token, ..., [DONE]
                        # the last token's chunk is the one before the finish chunk and [DONE]
                        points = (marks[0], marks[1], marks[2], marks[-3], marks[-1])
                        calm.phases.append(tuple(b - a for a, b in itertools.pairwise((started, *points))))

        await asyncio.gather(*(loop() for _ in range(clients)))
    return calm


async def _probe(url: str, until: Callable[[], bool]) -> list[float]:
    took = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        while not until():
            started = time.perf_counter()
            try:
                await c.get("/healthz")
                took.append(time.perf_counter() - started)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(PROBE_SECONDS)
    return took


async def timed_window(server, key: str, until: Callable[[], bool]) -> Window:
    """The calm app's streams until `until()`, with the server's CPU, steps, loop lag and the tokens
    computed for each app meanwhile."""
    cpu_before = thread_cpu_seconds(server.pid)
    steps_before = await asyncio.to_thread(step_figures, server.url, server.admin_key)
    metrics_before = await asyncio.to_thread(metrics_text, server.url, server.admin_key)
    started = time.monotonic()
    calm, probes = await asyncio.gather(calm_streams(server.url, key, until), _probe(server.url, until))
    seconds = time.monotonic() - started
    steps = await asyncio.to_thread(step_figures, server.url, server.admin_key)
    metrics = await asyncio.to_thread(metrics_text, server.url, server.admin_key)
    loop_cpu, other_cpu = (a - b for a, b in zip(thread_cpu_seconds(server.pid), cpu_before, strict=True))
    return Window(
        calm,
        seconds,
        loop_cpu,
        other_cpu,
        steps - steps_before,
        probes,
        parse_tokens_computed(metrics) - parse_tokens_computed(metrics_before),
        started,
        kernel_latency(metrics) - kernel_latency(metrics_before),
    )


def metrics_text(url: str, admin_key: str) -> str:
    answer = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
    return answer.raise_for_status().text


#: The kernel's histograms of the calm app read per window, and the bound above which a process counts
#: as slow there (the histograms' bucket): whether its stalls are in the kernel's queue or its prefill.
KERNEL_LATENCIES = {
    "queue wait": "llmasos_queue_wait_seconds",
    "first token": "llmasos_time_to_first_token_seconds",
}
SLOW_SECONDS = "0.05"


def kernel_latency(metrics: str, app: str = "calm") -> Counter:
    """Per histogram of KERNEL_LATENCIES, the app's processes (count), their seconds (sum) and those
    within SLOW_SECONDS (fast), cumulative since the server started."""
    figures: Counter = Counter()
    for line in metrics.splitlines():
        for name, metric in KERNEL_LATENCIES.items():
            if not line.startswith(metric) or f'app="{app}"' not in line:
                continue
            value = float(line.split()[-1])
            if line.startswith(metric + "_count"):
                figures[name, "count"] += value
            elif line.startswith(metric + "_sum"):
                figures[name, "sum"] += value
            elif line.startswith(metric + "_bucket") and f'le="{SLOW_SECONDS}"' in line:
                figures[name, "fast"] += value
    return figures


def parse_tokens_computed(metrics: str) -> Counter:
    """Tokens the engine has computed (prompt and output) per app, from a /metrics page."""
    prefix = 'llmasos_app_tokens_computed_total{app="'
    computed: Counter = Counter()
    for line in metrics.splitlines():
        if line.startswith(prefix):
            app, _, value = line.removeprefix(prefix).partition('"}')
            computed[app] += float(value)
    return computed


def median_ratio(pairs: list[Pair]) -> tuple[float, float, float]:
    """(median, lowest, highest) of the pairs' p95 stream-time ratios."""
    ratios = [pair.ratio for pair in pairs]
    return statistics.median(ratios), min(ratios), max(ratios)


def verdict(pairs: list[Pair]) -> str:
    median, low, high = median_ratio(pairs)
    met = "meets" if median <= GOAL_RATIO else "MISSES"
    return (
        f"p95 stream time {median:.2f}x calm (median of {len(pairs)} pairs; {low:.2f}-{high:.2f}): "
        f"{met} {GOAL_RATIO}x"
    )


def describe_windows(pairs: list[Pair]) -> str:
    """Per pair, the calm and attack figures side by side: where the calm app's time went."""
    lines = []
    for i, pair in enumerate(pairs, 1):
        calm, attack = pair.calm, pair.attack
        lines.append(
            f"  pair {i}: p95 stream {calm.stream_p95:.2f} -> {attack.stream_p95:.2f} s ({pair.ratio:.2f}x; "
            f"{len(calm.calm.streams)}/{len(attack.calm.streams)} streams), p95 gap "
            f"{calm.gap_p95 * 1000:.0f} -> {attack.gap_p95 * 1000:.0f} ms; server CPU/s loop "
            f"{calm.loop_cpu / calm.seconds:.2f} -> {attack.loop_cpu / attack.seconds:.2f}, other "
            f"{calm.other_cpu / calm.seconds:.2f} -> {attack.other_cpu / attack.seconds:.2f}; engine "
            f"{_engine(calm)} -> {_engine(attack)}; /healthz p95 {p95(calm.probes) * 1000:.0f} -> "
            f"{p95(attack.probes) * 1000:.0f} ms; tokens computed {_by_app(calm)} -> {_by_app(attack)}"
        )
        lines.append(f"    calm streams' phases, ms: {_phases(calm)} -> {_phases(attack)}")
        lines.append(f"    calm processes in the kernel: {_kernel(calm)} -> {_kernel(attack)}")
    return "\n".join(lines)


def _phases(window: Window) -> str:
    """Each phase's mean over the window's streams, and over its slowest 5% (where its p95 went)."""
    phases = window.calm.phases
    if not phases:
        return "none"
    slowest = sorted(phases, key=sum)[-max(1, len(phases) // 20) :]

    def mean_ms(streams: list[tuple[float, ...]], i: int) -> float:
        return 1000 * statistics.fmean(p[i] for p in streams)

    means = (f"{name} {mean_ms(phases, i):.0f}/{mean_ms(slowest, i):.0f}" for i, name in enumerate(PHASES))
    return " ".join(means)


def _kernel(window: Window) -> str:
    """Mean ms from admission to running and to the first token, and the share over SLOW_SECONDS."""
    figures = window.kernel
    parts = []
    for name in KERNEL_LATENCIES:
        count = figures[name, "count"]
        if count:
            slow = 1 - figures[name, "fast"] / count
            parts.append(
                f"{name} {1000 * figures[name, 'sum'] / count:.0f} ms ({slow:.0%} > {SLOW_SECONDS} s)"
            )
    return ", ".join(parts) or "none ended"


def _by_app(window: Window) -> str:
    return "/".join(f"{app} {n:.0f}" for app, n in sorted(window.computed.items())) or "none"


def _engine(window: Window) -> str:
    steps = window.steps
    return (
        f"{steps.steps / window.seconds:.0f} steps/s of {steps.ms_a_step:.0f} ms, "
        f"{steps.computed / max(steps.steps, 1):.1f} tok/step"
    )


def attack_cpu_per_request(pairs: list[Pair], requests: int) -> str:
    """The server's CPU beyond the calm windows' rate, per attacking request, over every pair."""
    if not requests:
        return "no attacking requests answered"
    extra = sum(
        (p.attack.loop_cpu + p.attack.other_cpu)
        - (p.calm.loop_cpu + p.calm.other_cpu) * p.attack.seconds / p.calm.seconds
        for p in pairs
    )
    loop = sum(p.attack.loop_cpu - p.calm.loop_cpu * p.attack.seconds / p.calm.seconds for p in pairs)
    return (
        f"server CPU beyond the calm rate: {1000 * extra / requests:.1f} ms per attacking request "
        f"({1000 * loop / requests:.1f} ms of it in the event loop; {requests} requests)"
    )
