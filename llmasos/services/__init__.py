"""System services (layer 5): summarize, translate, qa, code, classify, extract, chat.

from llmasos.services import get_service, list_services
result = get_service("summarize").run(syscalls, app, text, {"length": "short"})
"""

from llmasos.services import chat, classify, code, extract, qa, summarize, translate  # noqa: F401  (register)
from llmasos.services.base import Service, ServiceResult, get_service, list_services

__all__ = ["Service", "ServiceResult", "get_service", "list_services"]
