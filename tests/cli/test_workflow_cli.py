"""`llmasos workflow ...` in-process (no server): validate, run --wait, ps, show, graph, refusals."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli

FLOW = """
name: cli-flow
inputs:
  expr: {type: string}
steps:
  calc:
    kind: tool
    name: calculator
    input: {expression: "{{ inputs.expr }}"}
  tidy:
    kind: function
    name: clean_text
    needs: [calc]
    input: {text: "  result:   {{ steps.calc.output.value }} "}
output: "{{ steps.tidy.output.text }}"
"""


def test_validate_run_ps_show_and_graph(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW)
    code, out, _ = run_cli(monkeypatch, capsys, "workflow", "validate", str(path))
    assert code == 0 and "valid" in out and "2 steps" in out
    code, out, err = run_cli(
        monkeypatch, capsys, "workflow", "run", str(path), "--input", "expr=6*7", "--wait", "--json"
    )
    assert code == 0, err
    run = json.loads(out)
    assert run["status"] == "succeeded" and run["output"] == "result: 42"
    code, out, _ = run_cli(monkeypatch, capsys, "workflow", "ps", "--json")
    assert [r["id"] for r in json.loads(out)["runs"]] == [run["id"]]
    code, out, _ = run_cli(monkeypatch, capsys, "workflow", "show", run["id"])
    assert code == 0 and "calc" in out and "succeeded" in out and "result: 42" in out
    code, out, _ = run_cli(monkeypatch, capsys, "workflow", "graph", run["id"], "--format", "dot")
    assert code == 0 and '"calc" -> "tidy"' in out


def test_a_bad_workflow_exits_1_with_the_path(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(FLOW.replace("steps.calc.output.value", "steps.calc.output.nope"))
    code, _, err = run_cli(monkeypatch, capsys, "workflow", "validate", str(path))
    assert code == 1 and "steps.tidy.input.text" in err and "nope" in err
    code, _, err = run_cli(monkeypatch, capsys, "workflow", "run", str(tmp_path / "missing.yaml"))
    assert code == 1 and "cannot read" in err


GATED = """
name: cli-gated
steps:
  ok:
    kind: wait
  calc:
    kind: tool
    name: calculator
    needs: [ok]
    input: {expression: "6*7"}
output: "{{ steps.calc.output.value }}"
"""


def test_approve_cancel_and_resume_without_a_server_say_where_the_run_goes_on(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    path = tmp_path / "gated.yaml"
    path.write_text(GATED)
    code, out, err = run_cli(monkeypatch, capsys, "workflow", "run", str(path))
    assert code == 0 and "llmasos serve" in err
    run_id = out.strip()
    code, _, err = run_cli(monkeypatch, capsys, "workflow", "approve", run_id, "nope")
    assert code == 1 and "no wait step 'nope'" in err and "['ok']" in err
    code, out, err = run_cli(monkeypatch, capsys, "workflow", "cancel", run_id)
    assert code == 0 and out.strip() == f"{run_id}: cancelled"
    code, _, err = run_cli(monkeypatch, capsys, "workflow", "approve", run_id, "ok", "--data", '"yes"')
    assert code == 0 and "llmasos serve" in err
    code, out, err = run_cli(monkeypatch, capsys, "workflow", "resume", run_id)
    assert code == 0 and run_id in out and "llmasos serve" in err
    code, out, _ = run_cli(monkeypatch, capsys, "workflow", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["status"] in ("running", "succeeded", "pending")
    first = shown["steps"][0]
    assert (first["step"], first["status"], first["output"]) == ("ok", "succeeded", "yes")
