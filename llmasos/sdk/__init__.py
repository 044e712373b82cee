"""The Python SDK."""

from llmasos.sdk.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]
