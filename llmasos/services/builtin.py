"""The built-in services, registered through the plugin door like any other (entry point `services`
of the `llmasos` distribution)."""

from __future__ import annotations

from llmasos.programs import ProgramRegistry
from llmasos.services.chat import Chat
from llmasos.services.classify import Classify
from llmasos.services.code import Code
from llmasos.services.extract import Extract
from llmasos.services.qa import QuestionAnswering
from llmasos.services.summarize import Summarize
from llmasos.services.translate import Translate

BUILTIN_SERVICES = (Chat, Classify, Code, Extract, QuestionAnswering, Summarize, Translate)


def register(registry: ProgramRegistry) -> None:
    """The plugin hook: add every built-in service."""
    for service in BUILTIN_SERVICES:
        registry.register(service())
