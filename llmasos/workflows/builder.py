"""Workflows in Python: a builder producing the very `Workflow` that the YAML form parses to.

flow = WorkflowBuilder("receipt", inputs={"image": {"type": "string"}})
ocr = flow.tool("ocr", "ocr", input={"image": "{{ inputs.image }}"})
flow.chat("summary", prompt="Summarize: {{ steps.ocr.output.text }}", needs=[ocr])
workflow = flow.build()
"""

from __future__ import annotations

from typing import Any

from llmasos.workflows.spec import Workflow, parse


class WorkflowBuilder:
    """Adds steps one call each; `build()` validates the whole like a parsed file."""

    def __init__(
        self, name: str, *, inputs: dict[str, dict] | None = None, description: str = "", version: str = "1"
    ) -> None:
        self._data: dict[str, Any] = {
            "name": name,
            "description": description,
            "version": version,
            "inputs": dict(inputs or {}),
            "steps": {},
        }

    def step(self, step_id: str, kind: str, *, needs: list[str] | None = None, **fields: Any) -> str:
        """Add a step of any kind; returns its id, to pass in another step's `needs`."""
        entry = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        if needs:
            entry["needs"] = list(needs)
        self._data["steps"][step_id] = entry
        return step_id

    def service(self, step_id: str, name: str, **fields: Any) -> str:
        return self.step(step_id, "service", name=name, **fields)

    def tool(self, step_id: str, name: str, **fields: Any) -> str:
        return self.step(step_id, "tool", name=name, **fields)

    def function(self, step_id: str, name: str, **fields: Any) -> str:
        return self.step(step_id, "function", name=name, **fields)

    def chat(self, step_id: str, prompt: str, **fields: Any) -> str:
        return self.step(step_id, "chat", prompt=prompt, **fields)

    def workflow(self, step_id: str, name: str, **fields: Any) -> str:
        return self.step(step_id, "workflow", name=name, **fields)

    def wait(self, step_id: str, **fields: Any) -> str:
        return self.step(step_id, "wait", **fields)

    def output(self, value: Any) -> WorkflowBuilder:
        self._data["output"] = value
        return self

    def to_dict(self) -> dict:
        return {k: v for k, v in self._data.items() if v not in ("", None)}

    def build(self) -> Workflow:
        return parse(self.to_dict())
