"""Model names are matched case-insensitively (library names are lowercase), and an unknown name offers
the closest installed ones: the store is where every interface (CLI, HTTP, SDK) resolves a name."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.config import DEFAULT_MODEL
from llmasos.errors import ModelNotFoundError
from llmasos.library import ModelStore
from llmasos.library.catalog import lookup, resolve_alias


def test_a_name_in_another_case_finds_the_model(store: ModelStore, tiny_gguf: Path) -> None:
    pulled = store.pull(str(tiny_gguf), name="smollm2-135m-instruct", progress=False)
    assert store.get("SmolLM2-135M-Instruct") == pulled
    assert store.model_path("SMOLLM2-135M-INSTRUCT") == store.model_path(pulled.name)
    assert store.remove("SmolLM2-135M-Instruct").name == pulled.name
    assert store.list() == []


def test_an_unknown_name_offers_the_closest_installed_ones(store: ModelStore, tiny_gguf: Path) -> None:
    store.pull(str(tiny_gguf), name="smollm2-135m-instruct", progress=False)
    store.pull(str(tiny_gguf), name="qwen2.5-0.5b", progress=False)
    with pytest.raises(ModelNotFoundError) as err:
        store.get("smollm2-135-instruct")
    message = str(err.value)
    assert "did you mean 'smollm2-135m-instruct'?" in message
    assert "qwen2.5-0.5b" not in message.split("installed:")[0]  # offered only when close
    with pytest.raises(ModelNotFoundError) as err:
        store.get("zzz")
    assert "did you mean" not in str(err.value)


def test_the_alias_and_the_catalog_ignore_case() -> None:
    assert resolve_alias("Default") == DEFAULT_MODEL
    assert lookup("DEFAULT") is not None and lookup("DEFAULT") == lookup(DEFAULT_MODEL.upper())
