"""One live server and one headless Chromium for the whole console package.

The server (a real uvicorn on the tiny model, with the console at /ui) lives in one LLMASOS_HOME
for the package, so this package overrides the per-test `llmasos_home` with that one directory.
The browser is Debian's `chromium` (installed by `make setup-test`), driven by Playwright for
Python; Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmasos.config import EngineConfig
from tests.api.conftest import LiveServer, run_server
from tests.helpers.browser import chromium, console_page

SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="package")
def console_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("console") / "llmasos-home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMASOS_HOME", str(home))
        yield home


@pytest.fixture
def llmasos_home(console_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package's server home, for every test here (it overrides the suite's per-test one)."""
    monkeypatch.setenv("LLMASOS_HOME", str(console_home))
    return console_home


@pytest.fixture(scope="package")
def console_server(console_home: Path, tiny_gguf: Path) -> Iterator[LiveServer]:
    yield from run_server(tiny_gguf, "tiny", EngineConfig(block_size=4, kv_cache_bytes=2**20))


@pytest.fixture(scope="package")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="package")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    print(f"\nconsole screenshots: {SCREENSHOTS}")
    return SCREENSHOTS


@pytest.fixture
def page(browser, console_server: LiveServer):
    """A fresh browser context (its own sessionStorage) on the console, with every request it
    makes, every script error and every console message recorded for the test to check."""
    page = console_page(browser, console_server.url)
    yield page
    page.context.close()


def eventually(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.1):
    """`check()` once it returns something true (it may raise AssertionError meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(interval)
