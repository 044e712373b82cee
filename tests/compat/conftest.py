"""One real `llmasos serve` on the real default model for the whole client-compatibility package.

Each module here drives the server's HTTP APIs with a client library as its users would, unchanged
(the official `openai` package, LangChain, instructor, pydantic-ai, LlamaIndex, litellm, `ollama`), and
asserts what the client parsed, not only a status code. The server is a process of its own, started as
a user starts it, under its own LLMASOS_HOME (so the per-test homes of other fixtures cannot change what
it sees); loading the real model costs seconds, so the package shares it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmasos.library.store import ModelStore
from llmasos.security.admin import read_admin_key
from tests.api.conftest import free_port
from tests.helpers.served import Served, start_serve

MODEL = "smollm2-135m-instruct"


@dataclass
class CompatServer:
    served: Served
    admin_key: str

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def openai_url(self) -> str:
        """The base URL an OpenAI-style client is given."""
        return self.served.url + "/v1"

    def new_app_key(self, name: str, **fields: object) -> str:
        """Register an app through the admin API; returns its first key."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        reply = httpx.post(self.url + "/os/apps", json={"name": name, **fields}, headers=headers, timeout=30)
        reply.raise_for_status()
        return reply.json()["api_key"]


@pytest.fixture(scope="package")
def compat_server(
    default_gguf_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CompatServer]:
    """`llmasos serve` on the real default model, its library holding only that model."""
    home = tmp_path_factory.mktemp("compat") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMASOS_HOME", str(home))
        ModelStore().pull(str(default_gguf_path), name=MODEL, progress=False)
        served = start_serve(home, free_port())
        admin_key = read_admin_key()
    assert admin_key, "llmasos serve wrote no admin key"
    try:
        yield CompatServer(served, admin_key)
    finally:
        served.stop()
