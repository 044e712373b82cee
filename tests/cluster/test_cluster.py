"""The kernel on a real Ray cluster of loopback nodes (the session's `tiny_cluster`): who may join,
node health, placement by capability, remote engines equal to local ones, and failover mid-stream.

The failover tests remove node `b` (with a tool call in flight there), then `a`, so they run last in
this module, in that order."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter

import pytest

from llmasos.cluster.cluster_engine import ClusterEngine
from llmasos.cluster.runtime import NodeSpec, cluster_loader, join_node
from llmasos.cluster.tools import ToolPlacer
from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import ClusterUnavailableError, NodeRefusedError
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.process import ProcessState
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from llmasos.tools.base import ToolContext
from llmasos.tools.devices import use_nodes
from llmasos.tools.nodes import NODE_TOOLS
from llmasos.tools.registry import default_registry
from tests.cluster.conftest import NAP
from tests.helpers.engines import random_prompts

GREEDY = SamplingParams(max_tokens=24, temperature=0, repetition_penalty=1.3)


def png() -> bytes:
    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (64, 32), "white").save(image, format="PNG")
    return image.getvalue()


def cluster_kernel(directory) -> tuple[Kernel, Syscalls]:
    load, estimate = cluster_loader(directory)
    kernel = Kernel(ResidencyManager(1 << 40, load, estimate), KernelConfig())
    return kernel, Syscalls(kernel, AppRegistry())


def local_greedy(model_path, prompts) -> list[tuple[str, list[int]]]:
    """What the same engine, in this process with the remote one's settings, generates alone."""
    engine = LLMEngine.from_path(str(model_path), EngineConfig(num_threads=1))
    return [engine.generate([p], GREEDY)[0] for p in prompts]


def streamed(sys: Syscalls, app: App, pid: int) -> tuple[str, list[int]]:
    events = list(sys.events(app, pid, timeout=120))
    return "".join(e.text for e in events), [t for e in events for t in e.token_ids]


def test_nodes_show_capabilities_models_and_the_reason_a_model_is_unhealthy(tiny_cluster) -> None:
    nodes = {n.name: n for n in tiny_cluster.directory.nodes()}
    assert set(nodes) >= {"a", "b"}
    a, b = nodes["a"], nodes["b"]
    assert a.alive and b.alive and b.healthy
    assert b.capabilities == ("llm", "vision", "nap")
    assert a.models["tiny"] == {"healthy": True, "reason": ""}
    assert not a.models["broken"]["healthy"] and not a.healthy
    assert "could not be loaded" in a.models["broken"]["reason"] and "broken" in a.reason
    assert [name for name, _ in tiny_cluster.directory.engines("broken")] == []


def test_a_node_without_the_secret_is_refused(tiny_cluster) -> None:
    node_id = tiny_cluster.ray_nodes["a"].node_id
    spec = NodeSpec("intruder", node_id, ("llm",), (("tiny", str(tiny_cluster.model_path)),))
    with pytest.raises(NodeRefusedError, match="cluster secret"):
        join_node(tiny_cluster.directory, spec, "a guessed secret")
    assert "intruder" not in {n.name for n in tiny_cluster.directory.nodes()}


def test_no_node_with_the_model_is_a_503_naming_the_capability(tiny_cluster) -> None:
    with pytest.raises(ClusterUnavailableError) as caught:
        ClusterEngine("absent-model", tiny_cluster.directory)
    assert caught.value.http_status == 503
    assert "'llm'" in str(caught.value) and "absent-model" in str(caught.value)
    with pytest.raises(ClusterUnavailableError, match="'embed'"):
        ToolPlacer(tiny_cluster.directory, NODE_TOOLS).run("embed", ["a text"])


@pytest.fixture
def on_nodes(tiny_cluster):
    """The tools run on the cluster's nodes, as under `serve --cluster`; the placer counts the calls."""
    placer = ToolPlacer(tiny_cluster.directory, {**NODE_TOOLS, **NAP})
    previous = use_nodes(placer)
    yield placer
    use_nodes(previous)


def test_ocr_and_speech_calls_land_only_on_nodes_with_the_capability(on_nodes) -> None:
    """A mixed load through the tools themselves: every OCR call on `b` (vision), every speech call on
    `a` (speech), though both nodes host tools."""
    context, registry = ToolContext(App("media")), default_registry()
    calls = [("ocr", {"image_base64": _b64(png())}), ("speak", {"text": "hello node"})] * 3
    results: list = []
    threads = [threading.Thread(target=lambda c=c: results.append(registry.call(*c, context))) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == len(calls)
    assert sum(r.output["duration_s"] > 0 for r in results if "audio_base64" in r.output) == 3
    assert on_nodes.calls == Counter({("ocr", "b"): 3, ("speak", "a"): 3})


def test_ask_with_an_image_runs_ocr_on_a_vision_node(tiny_cluster, on_nodes) -> None:
    from llmasos.router.ask import ask

    _, sys = cluster_kernel(tiny_cluster.directory)
    request = "what text is in this image?"
    answer = ask(sys, App("reader"), request, attachment=png(), use_model_for_close_calls=False)
    assert [step["step"] for step in answer.steps] == ["ocr"]
    assert on_nodes.calls == Counter({("ocr", "b"): 1})


def _nap_on_b(placer: ToolPlacer) -> tuple[threading.Thread, list]:
    """A 3 s `nap` call in flight on node b (round robin: the first call goes to a, the next to b),
    and the list its (node, result) goes into."""
    assert placer.run("nap", 0) == ("a", None)
    napped: list = []
    caller = threading.Thread(target=lambda: napped.append(placer.run("nap", 3.0)))
    caller.start()
    deadline = time.monotonic() + 30
    while placer.calls["nap", "b"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return caller, napped


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def test_remote_engines_generate_what_a_local_one_does_and_the_table_names_the_node(tiny_cluster) -> None:
    prompts = random_prompts([9, 14, 6, 11], seed=3)
    expected = local_greedy(tiny_cluster.model_path, prompts)
    kernel, sys = cluster_kernel(tiny_cluster.directory)
    app = App("etl")
    pids = [sys.generate(app, "tiny", p, GREEDY).pid for p in prompts]
    kernel.run_until_idle()
    assert [streamed(sys, app, pid) for pid in pids] == expected
    assert {kernel.table[pid].node for pid in pids} == {"a", "b"}  # spread over both nodes
    assert {row["node"] for row in sys.ps(app)} == {"a", "b"}
    assert all(kernel.table[pid].state is ProcessState.FINISHED for pid in pids)


def test_a_constrained_request_runs_on_a_node(tiny_cluster, tiny_loaded) -> None:
    """response_format's grammar crosses to the node with the request (rebuilt there)."""
    import json

    from llmasos.engine.constrained import Grammar

    kernel, sys = cluster_kernel(tiny_cluster.directory)
    grammar = Grammar.json_object(tiny_loaded.tokenizer, max_tokens=40)
    params = SamplingParams(
        max_tokens=grammar.max_tokens, temperature=1.5, seed=1, logits_processors=(grammar.processor(),)
    )
    app = App("json")
    pid = sys.generate(app, "tiny", random_prompts([6], seed=9)[0], params).pid
    kernel.run_until_idle()
    assert isinstance(json.loads(streamed(sys, app, pid)[0]), dict)


def test_os_nodes_and_metrics_show_nodes_health_and_processes(tiny_cluster) -> None:
    from fastapi.testclient import TestClient

    from llmasos.api.app import create_app
    from llmasos.security.admin import ensure_admin

    kernel, sys = cluster_kernel(tiny_cluster.directory)
    sys.cluster_nodes = lambda: [n.as_dict() for n in tiny_cluster.directory.nodes()]
    app = sys.apps.create(App("etl"))
    pid = sys.generate(app, "tiny", random_prompts([6], seed=1)[0], GREEDY).pid
    kernel.tick()  # placed and running, not finished
    node = kernel.table[pid].node
    admin = {"Authorization": f"Bearer {ensure_admin(sys.apps)[1]}"}
    with TestClient(create_app(sys, manage_kernel=False)) as client:
        listed = client.get("/os/nodes", headers=admin).json()["nodes"]
        metrics = client.get("/metrics", headers=admin).text
        denied = client.get("/os/nodes", headers={"Authorization": f"Bearer {sys.apps.issue_key('etl')}"})
    by_name = {n["name"]: n for n in listed}
    assert by_name[node]["processes"] == 1 and by_name[node]["alive"]
    assert by_name["a"]["models"]["broken"]["healthy"] is False
    assert denied.status_code == 403
    assert f'llmasos_node_processes{{node="{node}"}} 1.0' in metrics
    assert 'llmasos_node_model_healthy{model="broken",node="a"} 0.0' in metrics
    sys.cancel(app, pid)
    kernel.tick()


def test_a_node_dying_mid_stream_loses_and_repeats_nothing_and_its_tool_call_is_retried(
    tiny_cluster, on_nodes
) -> None:
    prompts = random_prompts([9, 14, 6, 11, 8, 12], seed=5)
    expected = local_greedy(tiny_cluster.model_path, prompts)
    kernel, sys = cluster_kernel(tiny_cluster.directory)
    app = App("chat")
    pids = [sys.generate(app, "tiny", p, GREEDY).pid for p in prompts]
    for _ in range(6):  # every prompt prefilled and a few tokens streamed
        kernel.tick()
    on_b = [pid for pid in pids if kernel.table[pid].node == "b"]
    assert on_b and all(0 < kernel.table[pid].tokens_out < GREEDY.max_tokens for pid in on_b)
    pids_on_b = tiny_cluster.pids_on("b")
    napping, napped = _nap_on_b(on_nodes)
    tiny_cluster.remove("b", pids_on_b)  # with a tool call in flight there
    kernel.run_until_idle()
    napping.join(timeout=60)
    assert napped == [("a", None)]  # retried once, on a
    assert on_nodes.calls == Counter({("nap", "a"): 2, ("nap", "b"): 1})
    assert [streamed(sys, app, pid) for pid in pids] == expected
    where = {pid: (kernel.table[pid].node, kernel.table[pid].tokens_out) for pid in pids}
    assert {node for node, _ in where.values()} == {"a"}, (where, on_b)
    assert kernel.residency.models["tiny"].engine.num_failovers == len(on_b)
    assert not {n.name: n for n in tiny_cluster.directory.nodes()}["b"].alive


def test_with_no_node_left_running_processes_fail_with_a_503_naming_the_capability(tiny_cluster) -> None:
    kernel, sys = cluster_kernel(tiny_cluster.directory)
    app = App("late")
    pids = [sys.generate(app, "tiny", p, GREEDY).pid for p in random_prompts([7, 9], seed=8)]
    for _ in range(3):
        kernel.tick()
    assert all(kernel.table[pid].node == "a" for pid in pids)
    tiny_cluster.remove("a")  # the last node with the model
    kernel.run_until_idle()
    for pid in pids:
        process, events = kernel.table[pid], list(sys.events(app, pid, timeout=60))
        assert process.state is ProcessState.FAILED
        error = events[-1].error
        assert error is not None and error.http_status == 503 and "'llm'" in str(error)
