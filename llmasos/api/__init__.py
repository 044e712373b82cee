"""The HTTP interface: an OpenAI-compatible API and the OS endpoints, over the kernel's system calls."""
