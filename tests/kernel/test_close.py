"""Closing a booted kernel gives back what booting and using it opened: a process that boots and closes
kernel after kernel (a test suite, an SDK script) holds no more descriptors than before."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

from llmasos.config import EngineConfig
from llmasos.engine.sampling import SamplingParams
from llmasos.kernel.boot import boot
from llmasos.kernel.kernel import KernelConfig
from llmasos.library.store import ModelStore
from llmasos.security.apps import App


def open_descriptors() -> dict[int, str]:
    """This process's open descriptors and what each names."""
    named = {}
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, closed by now
            named[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
    return named


def boot_use_and_close() -> None:
    """A kernel that has written everything booting opens files for: the apps' registry, the audit
    log (with sealed content, so the data keys too), a model's engine, an app's data."""
    syscalls = boot(
        KernelConfig(engine=EngineConfig(block_size=4, kv_cache_bytes=2**20)), 2**30, interface="sdk"
    )
    syscalls.start()
    name = f"writer-{uuid.uuid4().hex[:8]}"  # a new app each time: a new app database
    app = syscalls.apps.create(App(name, capabilities=("model:*", "tool:*"), audit_content=True))
    process = syscalls.generate(app, "tiny", "hello", SamplingParams(max_tokens=4, temperature=0))
    deadline = time.monotonic() + 60
    while not process.is_terminal and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.tokens_out == 4
    syscalls.kv_set(app, "note", {"kept": True})
    assert syscalls.audit.query(app=name)  # the audit log was opened and written
    syscalls.close()


def test_booting_and_closing_kernels_leaves_the_descriptors_as_they_were(tiny_gguf: Path) -> None:
    ModelStore().pull(str(tiny_gguf), name="tiny", progress=False)
    boot_use_and_close()  # the first kernel may open what the process keeps (libraries, /dev/urandom)
    before = open_descriptors()
    for _ in range(3):
        boot_use_and_close()
    assert open_descriptors() == before
