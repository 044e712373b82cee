"""/os/workflows over a real server on the tiny model: define, run (model calls as the app's
processes), show, events as server-sent events, approve, cancel, the graph, and refusals."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import LiveServer

FLOW = {
    "name": "sum-and-say",
    "inputs": {"expr": {"type": "string"}},
    "steps": {
        "calc": {"kind": "tool", "name": "calculator", "input": {"expression": "{{ inputs.expr }}"}},
        "say": {
            "kind": "chat",
            "model": "tiny",
            "max_tokens": 4,
            "needs": ["calc"],
            "prompt": "The answer is {{ steps.calc.output.value }}. Say it.",
        },
        "also": {"kind": "chat", "model": "tiny", "max_tokens": 4, "prompt": "Hello {{ inputs.expr }}"},
    },
    "output": {"result": "{{ steps.calc.output.value }}", "said": "{{ steps.say.output }}"},
}


def test_define_run_show_and_follow_a_run(long_tiny_server: LiveServer) -> None:
    with long_tiny_server.client(long_tiny_server.new_app("flows")) as http:
        assert http.post("/os/workflows", json={"spec": FLOW}).status_code == 201
        assert [w["name"] for w in http.get("/os/workflows").json()["workflows"]] == ["sum-and-say"]
        started = http.post(
            "/os/workflows/runs", json={"workflow": "sum-and-say", "inputs": {"expr": "6*7"}, "wait": True}
        )
        assert started.status_code == 201, started.text
        run = started.json()
        assert run["status"] == "succeeded", run["error"]
        assert run["output"]["result"] == 42 and isinstance(run["output"]["said"], str)
        steps = {s["step"]: s for s in run["steps"]}
        assert steps["say"]["status"] == "succeeded" and steps["say"]["attempts"] == 1
        assert http.get(f"/os/workflows/runs/{run['id']}").json()["status"] == "succeeded"
        assert run["id"] in [r["id"] for r in http.get("/os/workflows/runs").json()["runs"]]
        with http.stream("GET", f"/os/workflows/runs/{run['id']}/events") as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        types = [json.loads(line[6:])["type"] for line in lines[:-1]]
        assert (
            types[0] == "run_created" and types[-1] == "run_succeeded" and types.count("step_succeeded") == 3
        )
        dot = http.get(f"/os/workflows/runs/{run['id']}/graph", params={"format": "dot"})
        assert dot.status_code == 200 and '"calc" -> "say"' in dot.text and "palegreen" in dot.text
    # the model calls were the app's processes, audited as its service calls
    ps = long_tiny_server.syscalls.ps(long_tiny_server.syscalls.apps.get("flows"), include_finished=True)
    assert sum(1 for p in ps if p["app"] == "flows") == 2


def test_bad_specs_are_refused_with_the_path(long_tiny_server: LiveServer) -> None:
    with long_tiny_server.client(long_tiny_server.new_app("badflows")) as http:
        bad = json.loads(json.dumps(FLOW))
        bad["steps"]["say"]["prompt"] = "{{ steps.calc.output.nope }}"
        answer = http.post("/os/workflows/validate", json={"spec": bad})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["type"] == "invalid_workflow" and error["message"].startswith("steps.say.prompt:")
        bad["steps"]["say"]["prompt"] = "{{ ''.__class__ }}"
        assert http.post("/os/workflows/runs", json={"spec": bad}).status_code == 400
        answer = http.post("/os/workflows/runs", json={"spec": FLOW, "inputs": {}})
        assert answer.status_code == 400 and "inputs.expr" in answer.json()["error"]["message"]
        assert http.get("/os/workflows/runs/nope").status_code == 404


def test_approve_over_http_and_runs_are_private_to_their_app(long_tiny_server: LiveServer) -> None:
    spec = {
        "name": "gate",
        "steps": {
            "ok": {"kind": "wait"},
            "calc": {
                "kind": "tool",
                "name": "calculator",
                "needs": ["ok"],
                "input": {"expression": "{{ steps.ok.output.n }} + 1"},
            },
        },
        "output": "{{ steps.calc.output.value }}",
    }
    owner = long_tiny_server.client(long_tiny_server.new_app("owner"))
    other = long_tiny_server.client(long_tiny_server.new_app("other"))
    with owner, other:
        run = owner.post("/os/workflows/runs", json={"spec": spec, "wait": True, "timeout_s": 10}).json()
        assert run["status"] == "waiting"
        assert {s["step"]: s["status"] for s in run["steps"]} == {"ok": "waiting", "calc": "pending"}
        assert other.get(f"/os/workflows/runs/{run['id']}").status_code == 404
        assert other.post(f"/os/workflows/runs/{run['id']}/approve", json={"step": "ok"}).status_code == 404
        approved = owner.post(
            f"/os/workflows/runs/{run['id']}/approve", json={"step": "ok", "data": {"n": 1}}
        )
        assert approved.status_code == 200
        assert owner.post(f"/os/workflows/runs/{run['id']}/approve", json={"step": "ok"}).status_code == 409
        for _ in range(100):
            done = owner.get(f"/os/workflows/runs/{run['id']}").json()
            if done["status"] == "succeeded":
                break
            import time

            time.sleep(0.1)
        assert done["output"] == 2


@pytest.mark.parametrize("fmt", ["svg"])
def test_the_graph_as_a_picture_or_a_clear_refusal(long_tiny_server: LiveServer, fmt: str) -> None:
    import shutil

    with long_tiny_server.client(long_tiny_server.new_app("pictures")) as http:
        http.post("/os/workflows", json={"spec": FLOW})
        answer = http.get("/os/workflows/sum-and-say/graph", params={"format": fmt})
        if shutil.which("dot"):
            assert answer.status_code == 200 and answer.text.lstrip().startswith(("<?xml", "<svg"))
        else:
            assert (
                answer.status_code == 503 and "apt-get install graphviz" in answer.json()["error"]["message"]
            )


def test_the_sdk_runs_and_follows_a_workflow(long_tiny_server: LiveServer) -> None:
    import llmasos
    from llmasos.errors import WorkflowValidationError
    from llmasos.workflows import WorkflowBuilder

    flow = WorkflowBuilder("sdk-flow", inputs={"expr": {"type": "string"}})
    calc = flow.tool("calc", "calculator", input={"expression": "{{ inputs.expr }}"})
    flow.function("tidy", "clean_text", needs=[calc], input={"text": "= {{ steps.calc.output.value }}"})
    flow.output("{{ steps.tidy.output.text }}")
    with llmasos.Client(long_tiny_server.url, long_tiny_server.new_app("sdk")) as client:
        assert client.workflows.validate(flow)["valid"]
        run = client.workflows.run(flow, inputs={"expr": "2+3"}, wait=True)
        assert run["status"] == "succeeded" and run["output"] == "= 5"
        assert [e["type"] for e in client.workflows.events(run["id"])][-1] == "run_succeeded"
        assert client.workflows.get(run["id"])["output"] == "= 5"
        assert b"<svg" in client.workflows.graph(run["id"])
        with pytest.raises(WorkflowValidationError) as refused:
            client.workflows.run({"name": "x", "steps": {"a": {"kind": "tool", "name": "nope"}}})
        assert "steps.a.name" in str(refused.value)
