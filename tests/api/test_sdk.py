"""The Python SDK: remote, discovered-local and in-process clients behave alike."""

from __future__ import annotations

import asyncio

import pytest

import llmasos
from llmasos.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ServerUnavailableError,
)
from llmasos.sdk.discovery import remove_server_file, write_server_file

MESSAGES = [{"role": "user", "content": "hello"}]


def test_remote_client_chat_stream_complete_and_ps(tiny_server):
    client = llmasos.Client(tiny_server.url, tiny_server.admin_key, model="tiny")
    assert client.mode == "http"
    whole = client.chat(MESSAGES, max_tokens=5, seed=3, temperature=1.0)
    assert isinstance(whole, str)
    assert "".join(client.chat(MESSAGES, stream=True, max_tokens=5, seed=3, temperature=1.0)) == whole
    assert isinstance(client.complete("a b", max_tokens=3, temperature=0), str)
    assert {p["app"] for p in client.ps()} == {"admin"}
    assert [m["name"] for m in client.models()] == ["tiny"]


def test_remote_errors_are_the_same_classes_as_in_process(tiny_server):
    client = llmasos.Client(tiny_server.url, tiny_server.admin_key)
    with pytest.raises(ModelNotFoundError, match="no-such"):
        client.chat(MESSAGES, model="no-such")
    narrow = llmasos.Client(tiny_server.url, tiny_server.new_app("narrow", capabilities=("model:x",)))
    with pytest.raises(PermissionDeniedError):
        narrow.chat(MESSAGES, model="tiny")


def test_client_finds_the_local_server_and_its_admin_key(tiny_server):
    write_server_file(tiny_server.url)
    try:
        client = llmasos.Client(model="tiny")
        assert client.mode == "http"
        assert client.chat(MESSAGES, max_tokens=2)
    finally:
        remove_server_file()
    with pytest.raises(ServerUnavailableError, match="llmasos serve"):
        llmasos.Client(local=False)


def test_a_slow_but_live_server_is_still_found(llmasos_home):
    """A server that accepts the connection but is slow to answer /healthz (a busy machine) is
    still the local server: the discovery once gave up after 2 s and ran in-process instead."""
    import http.server
    import threading
    import time

    class SlowHealth(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(2.5)
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHealth)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    write_server_file(f"http://127.0.0.1:{stub.server_address[1]}")
    try:
        assert llmasos.Client(api_key="lmos-any").mode == "http"
    finally:
        stub.shutdown()
        remove_server_file()


def test_in_process_client_runs_its_own_kernel(tiny_server):
    # tiny_server pulled the model into this LLMASOS_HOME; no server file exists, so Client() is local.
    with llmasos.Client(model="tiny") as client:
        assert client.mode == "local"
        text = client.chat(MESSAGES, max_tokens=4, seed=1, temperature=1.0)
        assert "".join(client.chat(MESSAGES, stream=True, max_tokens=4, seed=1, temperature=1.0)) == text
        # ignore_eos: the random model may not end early, so only the reader's leaving can stop it.
        stream = client.chat(MESSAGES, stream=True, max_tokens=200, temperature=1.0, ignore_eos=True)
        next(stream)
        stream.close()  # the reader stops: the process is cancelled at once
        (last,) = [p for p in client.ps() if p["tokens_out"] < 200 and p["state"] == "cancelled"]
        assert "stopped" in last["reason"]


def test_async_client(tiny_server):
    async def main() -> tuple[str, str]:
        async with llmasos.AsyncClient(tiny_server.url, tiny_server.admin_key, model="tiny") as client:
            whole = await client.chat(MESSAGES, max_tokens=5, seed=9, temperature=1.0)
            parts = [
                d
                async for d in await client.chat(MESSAGES, stream=True, max_tokens=5, seed=9, temperature=1.0)
            ]
            return whole, "".join(parts)

    whole, streamed = asyncio.run(main())
    assert whole == streamed


@pytest.mark.parametrize("local", [False, True])
def test_a_stream_names_its_process_and_usage(tiny_server, local):
    client = (
        llmasos.Client(model="tiny", local=True)
        if local
        else llmasos.Client(tiny_server.url, tiny_server.admin_key)
    )
    with client:
        stream = client.chat(MESSAGES, model="tiny", stream=True, max_tokens=3, temperature=0)
        text = "".join(stream)
        assert text == client.chat(MESSAGES, model="tiny", max_tokens=3, temperature=0)
        assert stream.usage["completion_tokens"] == 3 and stream.usage["prompt_tokens"] > 3
        assert stream.usage["total_tokens"] == stream.usage["prompt_tokens"] + 3
        (process,) = [p for p in client.ps() if p["pid"] == stream.pid]
        assert process["tokens_out"] == 3 and process["tokens_in"] == stream.usage["prompt_tokens"]


def test_in_process_client_names_a_misspelled_sampling_parameter(tiny_server):
    with (
        llmasos.Client(model="tiny", local=True) as client,
        pytest.raises(InvalidRequestError, match="tempreature"),
    ):
        client.chat(MESSAGES, tempreature=0.5)
