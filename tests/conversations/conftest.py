"""An in-process server (FastAPI's TestClient) over a kernel running the tiny random model with a
256-token window, so that a conversation of a few dozen turns must page; two apps and an admin."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from llmasos.api.app import create_app
from llmasos.engine.engine import LLMEngine
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.model.loader import load_model
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog
from llmasos.services import summaries
from tests.helpers.engines import config_with
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf


@pytest.fixture(scope="package")
def tiny_window(tmp_path_factory: pytest.TempPathFactory):
    path, _ = write_tiny_gguf(tmp_path_factory.mktemp("tiny-256") / "tiny.gguf", TinySpec(context=256))
    return load_model(path)


@pytest.fixture
def syscalls(tiny_window) -> Iterator[Syscalls]:
    config = config_with(tiny_window, num_blocks=512, block_size=8)
    engine = LLMEngine(tiny_window, config)
    kernel = Kernel(
        ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1), KernelConfig(engine=config)
    )
    system = Syscalls(kernel, AppRegistry(), audit=AuditLog())
    kernel.start()
    yield system
    summaries.wait_idle()
    kernel.stop()


class Served:
    def __init__(self, client: TestClient, keys: dict[str, str], syscalls: Syscalls) -> None:
        self.http = client
        self.keys = keys
        self.syscalls = syscalls

    def openai(self, app: str = "alpha") -> openai.OpenAI:
        return openai.OpenAI(
            base_url="http://testserver/v1", api_key=self.keys[app], http_client=self.http, max_retries=0
        )

    def call(self, app: str, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[app]}"}
        return self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def served(syscalls: Syscalls) -> Iterator[Served]:
    keys = {}
    for name in ("alpha", "beta"):
        syscalls.apps.create(App(name))
        keys[name] = syscalls.apps.issue_key(name)
    with TestClient(create_app(syscalls)) as client:
        yield Served(client, keys, syscalls)
