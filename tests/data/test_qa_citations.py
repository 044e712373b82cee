"""The qa service over a vector store: an answer with citations (file, chunk, span) from the passages
retrieved, and "I don't know" — with no model call — when nothing relevant was retrieved."""

from __future__ import annotations

import time

import pytest

from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.programs import default_registry
from llmasos.security.apps import App, AppRegistry
from llmasos.services.qa import DONT_KNOW
from tests.helpers.fake_embedder import HashingEmbedder
from tests.helpers.fake_engine import FakeEngine

DOC = (
    b"# Backups\n\nBackups run every night and are kept for thirty days.\n\n"
    b"# Parking\n\nVisitors park behind the blue building.\n"
)


@pytest.fixture
def system():
    kernel = Kernel(ResidencyManager(1 << 30, lambda name: (FakeEngine(), 1), lambda name: 1), KernelConfig())
    syscalls = Syscalls(kernel, AppRegistry())
    syscalls.use_embedder(HashingEmbedder)
    kernel.start()
    app = syscalls.apps.create(App("reader"))
    store = syscalls.create_store(app, "guide")
    file = syscalls.create_file(app, "guide.md", DOC)
    syscalls.attach_file(app, store["id"], file["id"])
    while syscalls.get_store(app, store["id"])["file_counts"]["in_progress"]:
        time.sleep(0.02)
    yield syscalls, app, store["id"], file["id"]
    kernel.stop()


def _qa(syscalls: Syscalls, app: App, question: str, store_id: str):
    return default_registry().run(
        syscalls, app, "qa", {"question": question, "vector_store_id": store_id}, {"max_tokens": 4}, model="m"
    )


def test_an_answer_cites_the_passages_it_was_given(system) -> None:
    syscalls, app, store_id, file_id = system
    result = _qa(syscalls, app, "How long are backups kept?", store_id)
    assert result.output and result.output != DONT_KNOW
    citations = result.details["citations"]
    assert citations[0]["marker"] == "[1]" and citations[0]["file_id"] == file_id
    assert citations[0]["heading"] == "Backups" and citations[0]["filename"] == "guide.md"
    start, end = citations[0]["span"]
    assert DOC.decode()[start:end] == citations[0]["text"]
    assert result.usage["prompt_tokens"] > 0  # the model was asked


def test_nothing_relevant_retrieved_means_i_dont_know_without_a_model_call(system) -> None:
    syscalls, app, store_id, _ = system
    result = _qa(syscalls, app, "Quantum chromodynamics gluon confinement?", store_id)
    assert result.output == DONT_KNOW
    assert result.details["citations"] == []
    assert syscalls.ps(app) == []  # no generation was started
