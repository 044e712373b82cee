"""System services (layer 5): summarize, translate, qa, code, classify, extract, chat.

from llmasos.programs import default_registry
result = default_registry().run(syscalls, app, "summarize", text, {"length": "short"})
"""

from llmasos.services.base import Service, ServiceResult, Session, get_service, list_services

__all__ = ["Service", "ServiceResult", "Session", "get_service", "list_services"]
