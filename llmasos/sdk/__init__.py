"""The Python SDK."""

from llmasos.sdk.client import AsyncClient, Client
from llmasos.sdk.results import ChatCompletion
from llmasos.sdk.retries import RetryPolicy

__all__ = ["AsyncClient", "ChatCompletion", "Client", "RetryPolicy"]
