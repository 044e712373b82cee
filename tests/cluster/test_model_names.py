"""The head resolves model names its own library lacks when a live node serves them, so a model's file
need not be on the head (no Ray here: the registry's node views are given)."""

from __future__ import annotations

import pytest

from llmasos.cluster.registry import NodeView, model_resolver
from llmasos.errors import ModelNotFoundError
from llmasos.library.catalog import resolve_alias
from llmasos.library.store import ModelStore


def node(name: str, models: tuple[str, ...], alive: bool = True) -> NodeView:
    health = {m: {"healthy": True, "reason": ""} for m in models}
    return NodeView(name, "ray-id", ("llm",), health, alive, alive, "", 0.0)


def test_a_model_only_a_live_node_serves_resolves_and_one_nobody_serves_says_how_to_get_it(
    tiny_gguf, llmasos_home
) -> None:
    store = ModelStore()
    store.pull(str(tiny_gguf), name="on-head", progress=False)
    nodes = [node("n1", ("smollm2-135m-instruct", "only-on-n1")), node("n2", ("on-dead-node",), alive=False)]
    resolve = model_resolver(lambda: nodes, lambda name: store.get(name).name, resolve_alias)
    assert resolve("on-head") == "on-head"  # the library first
    assert resolve("only-on-n1") == "only-on-n1"
    assert resolve("default") == "smollm2-135m-instruct"  # aliases too, though the head lacks the file
    with pytest.raises(ModelNotFoundError, match="node start --models on-dead-node"):
        resolve("on-dead-node")
