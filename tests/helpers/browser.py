"""Debian's headless Chromium driven by Playwright for Python, for the tests of the web console.

`make setup-test` installs `chromium` with apt-get; Playwright's own browser downloads are never
used. A test module (or package) that needs a browser holds one for its length: Playwright's sync
API allows one at a time per thread, so two such scopes never overlap.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def chromium() -> Iterator:
    """A launched browser (skips the test when Playwright or Chromium is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: `make setup-test` installs Debian's chromium with apt-get")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: the tests may run as root, where Chromium refuses its sandbox.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def console_page(browser, url: str):
    """A fresh context (its own sessionStorage) on the console at `url`, with every request, script
    error and console message it makes recorded (`.requests`, `.errors`, `.messages`)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.requests = []
    page.errors = []
    page.messages = []
    page.on("request", lambda r: page.requests.append(r))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.messages.append(f"{m.type}: {m.text}"))
    page.goto(url + "/ui/")
    page.wait_for_selector("body[data-ready=true]")
    return page
