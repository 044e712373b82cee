"""Each workflow of examples/workflows/ validated and run on the tiny random model (its words are
noise, so these check the flow: every step ran as the app, data reached each step, the output's shape)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmasos.engine.engine import LLMEngine
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.model.loader import load_model
from llmasos.programs import default_registry
from llmasos.security.apps import App, AppRegistry
from llmasos.workflows import RunStore, WorkflowRunner, load
from tests.helpers.engines import config_with
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


@pytest.fixture(scope="module")
def tiny_long(tmp_path_factory: pytest.TempPathFactory):
    path, _ = write_tiny_gguf(tmp_path_factory.mktemp("tiny-long") / "tiny.gguf", TinySpec(context=2048))
    return load_model(path)


@pytest.fixture
def system(tiny_long):
    """A runner whose every model name is the tiny model, and an app to run as."""
    config = config_with(tiny_long, num_blocks=1024, block_size=8)
    engine = LLMEngine(tiny_long, config)
    kernel = Kernel(
        ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1), KernelConfig(engine=config)
    )
    syscalls = Syscalls(kernel, AppRegistry())
    kernel.start()
    runner = WorkflowRunner(syscalls, RunStore(), default_registry())
    yield runner, syscalls.apps.create(App("examples"))
    runner.close()
    kernel.stop()


def run_example(system, name: str, inputs: dict) -> dict:
    runner, app = system
    workflow = load(EXAMPLES / name)
    run_id = runner.submit(app, workflow, inputs)
    done = runner.wait(run_id, 240)
    assert done["status"] == "succeeded", done["error"]
    return done


def test_every_example_is_valid(system) -> None:
    runner, app = system
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert len(names) == 4
    for name in names:
        runner.validate(app, load(EXAMPLES / name))


def test_preprocess_inference_postprocess(system) -> None:
    done = run_example(
        system, "preprocess_infer_postprocess.yaml", {"question": "  What is\n\n the capital   of France? "}
    )
    assert done["output"]["question"] == "What is the capital of France?"
    assert isinstance(done["output"]["answer"], str) and len(done["output"]["answer"]) <= 300


def test_summarize_each_document_then_the_summaries(system) -> None:
    documents = [f"Document {i}: the harbour of town {i} opened a new pier for ferries." for i in range(3)]
    done = run_example(system, "summarize_documents.yaml", {"documents": documents})
    assert len(done["output"]["summaries"]) == 3 and isinstance(done["output"]["summary"], str)
    results = system[0].store.results(done["id"])
    assert sorted(i for (s, i) in results if s == "each" and i >= 0) == [0, 1, 2]


def test_receipt_photo_to_fields_and_summary(system, tmp_path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (640, 200), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for row, line in enumerate(["CORNER SHOP", "TOTAL 12.50"]):
        draw.text((20, 20 + row * 70), line, fill="black", font=font)
    path = tmp_path / "receipt.png"
    image.save(path)
    done = run_example(system, "receipt.yaml", {"image": str(path)})
    assert "CORNER" in done["output"]["text"].upper()
    fields = done["output"]["fields"]
    assert isinstance(fields["store"], str) and isinstance(fields["total"], int | float)


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
def test_spoken_question_to_spoken_answer(system, tmp_path: Path) -> None:
    runner, app = system
    question = tmp_path / "question.wav"
    runner.registry.run(
        runner.syscalls, app, "speak", {"text": "what time is it", "output_path": str(question)}
    )
    answer = tmp_path / "answer.wav"
    done = run_example(system, "spoken_question.yaml", {"audio": str(question), "answer_path": str(answer)})
    assert done["output"]["audio"] == str(answer) and answer.stat().st_size > 1000
    assert isinstance(done["output"]["question"], str)
