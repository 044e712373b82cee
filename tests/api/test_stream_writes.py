"""How a chat stream reaches the wire: its end (the last choice's finish, the usage, `[DONE]`) goes
out as one write, so a client waiting for `[DONE]` to send its next request gets it in one packet and
the server makes one write, not three (issue 21: each write is CPU the engine's threads lose)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit


def http_chunks(url: str, key: str, body: dict) -> list[bytes]:
    """POST `body` to /v1/chat/completions over a raw socket; the response's HTTP/1.1 chunks, one per
    write the server made (chunked transfer encoding frames each body message as one chunk)."""
    where = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {where.netloc}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall(head.encode() + payload)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    headers, _, rest = raw.partition(b"\r\n\r\n")
    assert b" 200 " in headers.split(b"\r\n")[0] and b"chunked" in headers.lower(), headers
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


def events_of(chunk: bytes) -> list[str]:
    return [line[len("data: ") :] for line in chunk.decode().split("\n\n") if line.startswith("data: ")]


def test_a_streams_end_is_one_write_after_its_last_token(tiny_server):
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = http_chunks(tiny_server.url, tiny_server.admin_key, body)
    last = events_of(chunks[-1])
    assert last[-1] == "[DONE]"
    finish, usage = (json.loads(e) for e in last[:-1])  # nothing else shares the write
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6
    earlier = [json.loads(e) for chunk in chunks[:-1] for e in events_of(chunk)]
    assert all(e["choices"][0].get("finish_reason") is None for e in earlier)  # the tokens, before it

    # n choices: each one's finish once, the last one's in the end's write (no usage asked: no usage)
    body = {**body, "n": 2, "max_tokens": 3, "stream_options": None}
    chunks = http_chunks(tiny_server.url, tiny_server.admin_key, body)
    events = [json.loads(e) for chunk in chunks for e in events_of(chunk) if e != "[DONE]"]
    assert sorted(e["choices"][0]["index"] for e in events if e["choices"][0].get("finish_reason")) == [0, 1]
    last = events_of(chunks[-1])
    assert len(last) == 2 and last[-1] == "[DONE]" and json.loads(last[0])["choices"][0]["finish_reason"]
