"""Without --cluster nothing starts or imports Ray: a server's whole boot path, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
from llmasos.kernel.boot import boot
from llmasos.api.app import create_app
import llmasos.cli.main
syscalls = boot(memory_budget=1 << 30, interface="http")
create_app(syscalls)
print("ray" in sys.modules, any(m.startswith("llmasos.cluster") for m in sys.modules))
"""


def test_a_single_box_never_imports_ray(llmasos_home) -> None:
    env = {**os.environ, "LLMASOS_HOME": str(llmasos_home)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
