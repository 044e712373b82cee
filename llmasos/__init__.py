"""LLMasOS: an operating system for LLM applications."""

from llmasos import errors

__version__ = "0.1.0"
__all__ = ["__version__", "errors"]
