"""The model's say in close calls: the `classify` service, constrained to the candidates' names."""

from __future__ import annotations

from typing import Any

from llmasos.router.catalog import Destination
from llmasos.router.router import Decide
from llmasos.security.apps import App


def model_decider(syscalls: Any, app: App, model: str = "default") -> Decide:
    """A `Decide` that asks the language model which of the candidates fits the request best."""
    from llmasos.services import get_service

    classify = get_service("classify")

    def decide(request: str, candidates: list[Destination]) -> str:
        guide = "; ".join(f"{d.name}: {d.description}" for d in candidates)
        result = syscalls.invoke(
            app,
            "service",
            classify.name,
            lambda: classify.run(
                syscalls,
                app,
                request,
                {
                    "labels": [d.name for d in candidates],
                    "instructions": f"Which of these handles the user's request? {guide}",
                },
                model=model,
            ),
        )
        return result.output

    return decide
