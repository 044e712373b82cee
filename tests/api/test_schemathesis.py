"""Schemathesis fuzzes every operation of the served OpenAPI spec: no input may produce a 5xx.

Bounded in time (it runs in CI on every `make test`); it drives a real server on the tiny model.
Its hooks (`schemathesis_hooks.py`) also send each generated body with lone surrogates in every
string, nested 40 and 5,000 levels deep, and larger than the server's body limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmasos.api.limits import HttpLimits
from llmasos.config import EngineConfig
from tests.api.conftest import LiveServer, run_server

#: Seconds the fuzzer may run; every operation gets examples well within it on the tiny model.
BUDGET_SECONDS = 60
#: A small body limit, so that oversized bodies cost the run little.
BODY_LIMIT = 64 * 1024
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


@pytest.fixture
def fuzzed_server(tiny_gguf: Path) -> Iterator[LiveServer]:
    engine = EngineConfig(block_size=4, kv_cache_bytes=2**20)
    yield from run_server(tiny_gguf, "tiny", engine, limits=HttpLimits(max_body_bytes=BODY_LIMIT))


def test_no_server_errors_under_schemathesis(fuzzed_server, tmp_path: Path):
    tiny_server = fuzzed_server
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
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "LLMASOS_TEST_BODY_LIMIT": str(BODY_LIMIT)},
        timeout=BUDGET_SECONDS + 120,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
