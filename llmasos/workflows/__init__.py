"""Workflows: durable graphs of services, tools, functions and model calls, run as an app's processes.

from llmasos.workflows import WorkflowRunner, RunStore, load
runner = WorkflowRunner(syscalls, RunStore(), default_registry())
run_id = runner.submit(app, load("flow.yaml"), {"text": "..."})
"""

from llmasos.workflows.builder import WorkflowBuilder
from llmasos.workflows.executor import WorkflowRunner, checked_inputs
from llmasos.workflows.functions import Function, function
from llmasos.workflows.spec import Step, Workflow, json_schema, load, loads, parse
from llmasos.workflows.store import RunStore
from llmasos.workflows.validation import validate

__all__ = [
    "Function",
    "RunStore",
    "Step",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowRunner",
    "checked_inputs",
    "function",
    "json_schema",
    "load",
    "loads",
    "parse",
    "validate",
]
