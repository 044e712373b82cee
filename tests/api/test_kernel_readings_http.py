"""/healthz, /os/models and services' model limits read the kernel through system calls, on a real engine."""

from __future__ import annotations

import httpx

from llmasos.security.apps import App
from tests.helpers.tiny_model import TinySpec

ADMIN = App("admin", capabilities=("admin",))


def test_model_limits_are_the_tiny_models_window_and_kv_pool(tiny_server):
    limits = tiny_server.syscalls.model_limits(ADMIN, "tiny")
    spec = TinySpec()
    # The server's pool is 1 MiB of K and V for every layer and KV head, in the engine's KV dtype.
    kv_dtype_bytes = tiny_server.engine().runner.kv_dtype.itemsize
    kv_bytes_per_token = spec.layers * 2 * spec.kv_heads * spec.head_dim * kv_dtype_bytes
    assert limits.kv_tokens == 2**20 // kv_bytes_per_token
    assert limits.context_length == min(spec.context, limits.kv_tokens) == spec.context


def test_health_and_models_show_a_preloaded_model(tiny_server):
    assert httpx.get(tiny_server.url + "/healthz").json() == {"status": "ok", "resident_models": []}
    seconds = tiny_server.syscalls.preload(ADMIN, "tiny")
    assert seconds > 0
    assert httpx.get(tiny_server.url + "/healthz").json()["resident_models"] == ["tiny"]
    body = tiny_server.client().get("/os/models").json()
    (tiny,) = body["models"]
    # its weights (~0.2 MB); its 1 MiB KV pool is charged only as it is written
    assert tiny["resident"] and tiny["memory_bytes"] > 2**17 and tiny["active_processes"] == 0
    assert body["memory_used_bytes"] == tiny["memory_bytes"] <= body["memory_budget_bytes"] == 4 * 2**30
