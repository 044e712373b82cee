"""The attack suite's server: the tiny model behind a real uvicorn on loopback, with a hashing
embedder so vector stores ingest without loading a sentence model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmasos.config import EngineConfig
from tests.api.conftest import LiveServer, run_server
from tests.helpers.fake_embedder import HashingEmbedder


@pytest.fixture
def server(tiny_gguf: Path) -> Iterator[LiveServer]:
    for live in run_server(tiny_gguf, "tiny", EngineConfig(block_size=4, kv_cache_bytes=2**20)):
        live.syscalls.use_embedder(HashingEmbedder)
        yield live
