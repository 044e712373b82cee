"""The intent router: a plain-language request to the service, tool or chain that should handle it."""

from llmasos.router.router import IntentRouter, Route, Step

__all__ = ["IntentRouter", "Route", "Step"]
