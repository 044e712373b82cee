"""System calls over a kernel with no model, for programs that make no model call (tools), and an
audit log under the test's LLMASOS_HOME, so the rows a call writes can be read back."""

from __future__ import annotations

from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import AppRegistry
from llmasos.security.audit import AuditLog


def syscalls_without_models() -> Syscalls:
    def no_model(name: str):
        raise AssertionError(f"a program without model calls asked for model {name!r}")

    kernel = Kernel(ResidencyManager(1 << 30, no_model, lambda name: 1), KernelConfig())
    return Syscalls(kernel, AppRegistry(), audit=AuditLog())
