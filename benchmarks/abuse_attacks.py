"""The attacks of `abuse.py`, each a coroutine `attack(server, keys, deadline, stats)` that runs until
`deadline` (time.monotonic()) or until it is done, and writes what it saw into `stats`. `server` has
`url`, `admin_key` and `headers(key)`; `keys` holds the API keys of the benchmark's apps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

#: The well-behaved app's request (streamed and timed by abuse.py; the attacks reuse its shape).
CALM_CHAT = {
    "model": "default",
    "messages": [{"role": "user", "content": "Name three primary colors."}],
    "max_tokens": 16,
    "temperature": 0,
    "stream": True,
}


def _answered(stats: dict, outcome: str) -> None:
    """Count one attacking request by its outcome (a status code, "closed", "dropped ...")."""
    stats[outcome] = stats.get(outcome, 0) + 1
    stats["requests"] = stats.get("requests", 0) + 1


async def _raw(url: str, head: str, chunks: list[bytes]) -> bytes:
    """Send a raw request over one connection while reading its answer: a server that answers before
    reading the whole body can close the connection under the writer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = asyncio.create_task(reader.read(200))
    try:
        writer.write(head.encode() + b"\r\n\r\n")
        for chunk in chunks:
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    try:
        return await asyncio.wait_for(answer, 60)
    except (ConnectionError, TimeoutError):
        return b""
    finally:
        writer.close()


async def oversized_bodies(server, keys: dict, deadline: float, stats: dict) -> None:
    """30 MB bodies: without a key, with one (declared), and with one, chunked (no Content-Length)."""
    size = 30 << 20
    piece = b"a" * (1 << 20)
    declared = [piece] * 30
    chunked = [b"100000\r\n" + piece + b"\r\n"] * 30 + [b"0\r\n\r\n"]
    start = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    auth = f"Authorization: Bearer {keys['bulk']}\r\n"
    variants = [
        (start + f"Content-Length: {size}", declared),
        (start + auth + f"Content-Length: {size}", declared),
        (start + auth + "Transfer-Encoding: chunked", chunked),
    ]
    while time.monotonic() < deadline:
        answers = await asyncio.gather(*(_raw(server.url, *variants[i % 3]) for i in range(9)))
        for a in answers:
            code = a[9:12].decode(errors="replace") or "closed"
            _answered(stats, code)


async def huge_prompts(server, keys: dict, deadline: float, stats: dict) -> None:
    body = {**CALM_CHAT, "stream": False, "messages": [{"role": "user", "content": "word " * 790_000}]}
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers(keys["bulk"]), timeout=120) as c:
        while time.monotonic() < deadline:
            rs = await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(4)))
            for r in rs:
                _answered(stats, str(r.status_code))


async def bad_keys(server, keys: dict, deadline: float, stats: dict, total: int = 3000) -> None:
    await _guesses(server.url, stats, total)


async def bad_keys_elsewhere(server, keys: dict, deadline: float, stats: dict, total: int = 3000) -> None:
    """The control for `bad_keys`: the same client, against a stub in this process that answers 401 at
    once. What the calm app loses here is the attacker's CPU on this machine, not the server's work."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    stub = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = stub.sockets[0].getsockname()[1]
    async with stub:
        await _guesses(f"http://127.0.0.1:{port}", stats, total)


async def _guesses(url: str, stats: dict, total: int) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer lmos-guess"}) as c:
        sent = 0
        while sent < total:  # all of them, however long it takes
            probes = (c.get(f"/v1/probe/{sent + i}/x") for i in range(50))
            rs = await asyncio.gather(*probes, return_exceptions=True)
            sent += len(rs)
            for r in rs:
                code = str(r.status_code) if isinstance(r, httpx.Response) else "error"
                _answered(stats, code)


async def never_reading(server, keys: dict, deadline: float, stats: dict) -> None:
    """16 streams of long answers (4,000 tokens each, end of text suppressed) that read nothing;
    `stats` gets the tokens the server generated for them by the end of the attack (bounded by
    backpressure, or all 64,000)."""
    body = (
        b'{"model": "default", "messages": [{"role": "user", "content": "Tell a long story."}], '
        b'"max_tokens": 4000, "logit_bias": {"0": -100, "2": -100}, "stream": true}'
    )
    before = await _idle_tokens(server)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {keys['idle']}\r\nContent-Length: {len(body)}"
    )
    host, port = server.url.removeprefix("http://").split(":")
    writers = []
    for _ in range(16):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(head.encode() + b"\r\n\r\n" + body)
        writers.append(writer)
    stats["requests"] = len(writers)
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    after = await _idle_tokens(server)
    stats["tokens generated for them"] = sum(n for pid, n in after.items() if pid not in before)
    for writer in writers:
        writer.close()


async def _idle_tokens(server) -> dict[int, int]:
    """pid -> tokens generated, of every process of the never-reading app."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers(), timeout=30) as c:
        ps = (await c.get("/os/ps")).json()["processes"]
    return {p["pid"]: p["tokens_out"] for p in ps if p["app"] == "idle"}


#: The disconnect storm's pace: streams opened a second, at fixed times whatever the server answers.
#: 15 a second stays under the server's default request-start limit (1,200 a minute, api/request_rate.py),
#: so every stream is admitted and dropped rather than refused; `abuse.py --storm-rate` changes it.
STORM_RATE = 15.0
#: The longest a storm stream is held: it is dropped after its first chunk or after this, whichever first.
STORM_HOLD_SECONDS = 0.5


async def disconnect_storm(
    server,
    keys: dict,
    deadline: float,
    stats: dict,
    rate: float = STORM_RATE,
    hold: float = STORM_HOLD_SECONDS,
) -> None:
    """Streams opened at a fixed `rate`, each dropped after its first chunk or after `hold` seconds,
    whichever first: the attack's pace does not depend on how fast the server answers (a storm that
    waited for each first chunk grew weaker as the server slowed: 20 streams in one run, 340 in another)."""
    body = {**CALM_CHAT, "max_tokens": 200, "messages": [{"role": "user", "content": "Count to 100."}]}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    headers = server.headers(keys["storm"])
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60, limits=limits) as c:

        async def one() -> None:
            try:
                async with asyncio.timeout(hold), c.stream("POST", "/v1/chat/completions", json=body) as r:
                    outcome = str(r.status_code)  # 429: the app's request rate
                    if r.status_code == 200:
                        async for _ in r.aiter_lines():
                            break
                        outcome = "dropped after its first chunk"
            except TimeoutError:
                outcome = f"dropped at {hold} s"
            except httpx.HTTPError:
                outcome = "error"
            _answered(stats, outcome)

        started = time.monotonic()
        streams = []
        while time.monotonic() < deadline:
            streams.append(asyncio.create_task(one()))
            await asyncio.sleep(max(0.0, started + len(streams) / rate - time.monotonic()))
        stats["seconds"] = time.monotonic() - started
        await asyncio.gather(*streams)


#: Each quota-overshoot request's max_tokens: with its prompt, what admission reserves for it.
QUOTA_MAX_TOKENS = 300
#: The key of the quota attack's stats under which it reports the tokens computed for the metered app.
QUOTA_TOKENS = "tokens computed for the app (quota 2000 a minute)"


async def quota_overshoot(server, keys: dict, deadline: float, stats: dict) -> None:
    """20 concurrent requests of max_tokens 300 from the app allowed 2,000 tokens a minute; those
    still running at the deadline are dropped (and so cancelled). The tokens the server computed for
    the app must stay within its quota."""
    body = {**CALM_CHAT, "stream": False, "max_tokens": QUOTA_MAX_TOKENS, "temperature": 1.0}
    timeout = max(1.0, deadline - time.monotonic())
    headers = server.headers(keys["metered"])
    before = _computed_for(server, "metered")
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=timeout) as c:
        rs = await asyncio.gather(
            *(c.post("/v1/chat/completions", json=body) for _ in range(20)), return_exceptions=True
        )
    for r in rs:
        _answered(stats, str(r.status_code) if isinstance(r, httpx.Response) else "dropped at the deadline")
        if isinstance(r, httpx.Response) and r.status_code == 200:  # "_": per pair, not summed over them
            stats["_prompt tokens"] = max(stats.get("_prompt tokens", 0), r.json()["usage"]["prompt_tokens"])
    await asyncio.sleep(1.0)
    computed = _computed_for(server, "metered") - before
    stats[QUOTA_TOKENS] = int(computed)


def _computed_for(server, app: str) -> float:
    metrics = httpx.get(server.url + "/metrics", headers=server.headers(), timeout=30).text
    prefix = f'llmasos_app_tokens_computed_total{{app="{app}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


def run_attack(name: str, server, keys: dict, deadline: float, options: dict | None = None) -> dict:
    """One attack, in a process of its own (as an attacker is): its client work must not slow the
    calm app's client, which runs in this benchmark's process. `options`: the attack's keywords."""
    stats: dict = {}
    asyncio.run(ATTACKS[name](server, keys, deadline, stats, **(options or {})))
    return stats


def ready() -> None:
    """Nothing: called once so the attacker's process has started and imported this module before
    the first attack window opens (a spawned interpreter's start took ~1 s of the window before)."""


Attack = Callable[[Any, dict, float, dict], Awaitable[None]]
ATTACKS: dict[str, Attack] = {
    "oversized bodies (30 MB)": oversized_bodies,
    "huge prompts (4 MB)": huge_prompts,
    "3,000 bad-key requests": bad_keys,
    "control: the same client against a stub": bad_keys_elsewhere,
    "never-reading clients": never_reading,
    "disconnect storm": disconnect_storm,
    "quota overshoot (tpm 2000)": quota_overshoot,
}
