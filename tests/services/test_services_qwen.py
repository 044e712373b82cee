"""The system services on Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), the model issue 23 makes first-class
because the 135M default got these wrong: a summary of a paragraph on the James Webb telescope (the
default wrote about the Aurora Australis), a French translation (the default's was not French), and the
README's other examples, checked for the facts a correct answer must state.

Runs where the file is given (`LLMASOS_TEST_QWEN_GGUF=/path/to/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`);
about 2 GB of memory and a minute or two of CPU on two cores. Greedy decoding.
"""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import pytest

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from llmasos.services import get_service
from tests.services.test_services_real import PERSON

QWEN = Path(os.environ.get("LLMASOS_TEST_QWEN_GGUF", "/nonexistent"))
WEBB = (
    "The James Webb Space Telescope is the largest optical telescope in space. Launched in December "
    "2021, it observes the universe in infrared light, which lets it see through dust clouds and detect "
    "the faint light of the first galaxies, formed more than 13 billion years ago. Its 6.5-metre mirror "
    "is made of 18 gold-coated hexagonal segments, and it orbits the Sun near the second Lagrange point, "
    "1.5 million kilometres from Earth."
)

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not QWEN.is_file(), reason="set LLMASOS_TEST_QWEN_GGUF to the Qwen2.5-1.5B GGUF"),
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory):
    engine = LLMEngine.from_path(str(QWEN), EngineConfig(kv_cache_bytes=128 * 2**20, num_threads=2))
    kernel = Kernel(
        ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1),
        KernelConfig(engine=engine.config),
    )
    syscalls = Syscalls(kernel, AppRegistry(tmp_path_factory.mktemp("home") / "state.db"))
    kernel.start()
    yield syscalls
    kernel.stop()


def _run(system: Syscalls, name: str, input, params: dict | None = None):
    service = get_service(name)
    result = service.run(system, App("tester"), input, params, model="qwen")
    if "type" in service.output_schema:
        jsonschema.validate(result.output, service.output_schema)
    return result


def test_summarize_states_what_the_paragraph_is_about(system) -> None:
    out = _run(system, "summarize", WEBB, {"length": "short", "max_tokens": 80}).output.lower()
    assert "webb" in out or "telescope" in out, out
    assert "infrared" in out or "galax" in out, out
    assert "aurora" not in out


def test_translate_to_french(system) -> None:
    out = _run(system, "translate", "Good morning, the cat is on the table.", {"target": "French"}).output
    words = out.lower().replace("'", " ").replace(",", " ").replace(".", " ").split()
    # French, with the sentence's words. Not checked: its nouns' genders and word choice (measured
    # 2026-12-06: "Bonjour, la chat est sur le tableau.": "la chat", and "tableau", a board, for table).
    assert "bonjour" in words and "chat" in words and "sur" in words, out


def test_classify_extract_qa_and_chat(system) -> None:
    labels = ["positive", "negative"]
    assert _run(system, "classify", "This phone broke after two days. Awful.", {"labels": labels}).output == (
        "negative"
    )
    text = "John Smith is 42 years old and lives in Paris. He works as a baker."
    person = _run(system, "extract", text, {"schema": PERSON}).output
    assert person["age"] == 42 and person["city"] == "Paris" and "baker" in person["job"].lower()
    answer = _run(system, "qa", {"question": "What is John's job?", "context": text}).output
    assert "baker" in answer.lower()
    assert "Paris" in _run(system, "chat", "What is the capital of France?", {"max_tokens": 40}).output


def test_code_writes_a_working_function(system) -> None:
    result = _run(
        system,
        "code",
        "a Python function `total(xs)` that returns the sum of a list",
        {"task": "write", "max_tokens": 160},
    )
    namespace: dict = {}
    exec(result.details["code"], namespace)
    assert namespace["total"]([1, 2, 3.5]) == 6.5
