"""LLMasOS: an operating system for LLM applications."""

from typing import TYPE_CHECKING, Any

from llmasos import errors

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "__version__", "errors"]

if TYPE_CHECKING:
    from llmasos.sdk.client import AsyncClient, Client


def __getattr__(name: str) -> Any:
    # The SDK is imported on first use, so `import llmasos` stays cheap for the CLI and the kernel.
    if name in ("Client", "AsyncClient"):
        from llmasos.sdk import client

        return getattr(client, name)
    raise AttributeError(f"module 'llmasos' has no attribute {name!r}")
