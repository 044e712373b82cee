"""System calls over a kernel with no model and a hashing embedder, two apps, and a way to wait for
background ingestion to settle."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App
from tests.helpers.fake_embedder import HashingEmbedder
from tests.helpers.programs import syscalls_without_models


@dataclass
class DataWorld:
    syscalls: Syscalls
    embedder: HashingEmbedder
    alpha: App
    beta: App

    def settle(self, app: App, store_id: str, timeout: float = 30.0) -> dict:
        """Wait until no file of the store is in progress; the store."""
        deadline = time.monotonic() + timeout
        while True:
            store = self.syscalls.get_store(app, store_id)
            if not store["file_counts"]["in_progress"]:
                return store
            if time.monotonic() > deadline:
                raise AssertionError(f"ingestion did not settle: {store}")
            time.sleep(0.02)

    def add_document(self, app: App, store_id: str, name: str, content: bytes, **attach) -> dict:
        file = self.syscalls.create_file(app, name, content)
        self.syscalls.attach_file(app, store_id, file["id"], **attach)
        self.settle(app, store_id)
        return self.syscalls.get_store_file(app, store_id, file["id"])


@pytest.fixture
def world() -> DataWorld:
    syscalls = syscalls_without_models()
    embedder = HashingEmbedder()
    syscalls.use_embedder(lambda: embedder)
    alpha = syscalls.apps.create(App("alpha"))
    beta = syscalls.apps.create(App("beta"))
    return DataWorld(syscalls, embedder, alpha, beta)
