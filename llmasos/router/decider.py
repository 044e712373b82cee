"""The model's say in close calls: the `classify` service, constrained to the candidates' names."""

from __future__ import annotations

from typing import Any

from llmasos.programs import default_registry
from llmasos.router.catalog import Destination
from llmasos.router.router import Decide
from llmasos.security.apps import App


def model_decider(syscalls: Any, app: App, model: str = "default") -> Decide:
    """A `Decide` that asks the language model which of the candidates fits the request best."""
    registry = default_registry()

    def decide(request: str, candidates: list[Destination]) -> str:
        guide = "; ".join(f"{d.name}: {d.description}" for d in candidates)
        params = {
            "labels": [d.name for d in candidates],
            "instructions": f"Which of these handles the user's request? {guide}",
        }
        return registry.run(syscalls, app, "classify", request, params, model=model, kind="service").output

    return decide
