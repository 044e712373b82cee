"""One real server on the real default model for the whole client-compatibility package.

Each module here drives `llmasos serve`'s HTTP APIs with a client library as its users would, unchanged
(the official `openai` package, LangChain, instructor, pydantic-ai, LlamaIndex, litellm, `ollama`), and
asserts what the client parsed, not only a status code. Loading the real model costs seconds, so the
package shares one server; a module that needs other settings starts its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmasos.config import EngineConfig
from tests.api.conftest import LiveServer, run_server

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="package")
def compat_server(default_gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`llmasos serve` on the real default model, under its own LLMASOS_HOME, for every module here."""
    home = tmp_path_factory.mktemp("compat-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMASOS_HOME", str(home))
        yield from run_server(default_gguf_path, MODEL, EngineConfig(kv_cache_bytes=64 * 2**20))


@pytest.fixture
def openai_base_url(compat_server: LiveServer) -> str:
    return compat_server.url + "/v1"
