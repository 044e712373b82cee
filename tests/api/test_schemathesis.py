"""Schemathesis fuzzes every operation of the served OpenAPI spec: no input may produce a 5xx.

Bounded in time (it runs in CI on every `make test`); it drives a real server on the tiny model.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: Seconds the fuzzer may run; every operation gets examples well within it on the tiny model.
BUDGET_SECONDS = 60


def test_no_server_errors_under_schemathesis(tiny_server, tmp_path: Path):
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if exe is None:
        pytest.fail("schemathesis is not installed; `make setup-test` installs the test extras")
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            exe,
            "run",
            f"{tiny_server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {tiny_server.admin_key}",
            "--max-examples",
            "30",
            "--max-time",
            str(BUDGET_SECONDS),
            "--request-timeout",
            "60",
            "--seed",
            "1",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # its example database (.schemathesis/) goes there, not into the checkout
        timeout=BUDGET_SECONDS + 120,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
