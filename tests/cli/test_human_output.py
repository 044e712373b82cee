"""What the CLI prints for people: dates as local time or "3 min ago" (`--json` keeps machine values),
and tables that fit an 80-column terminal without cutting the columns a row is read by."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmasos.cli.dates import human_time, local_time
from llmasos.config import EngineConfig
from llmasos.sdk.discovery import remove_server_file, write_server_file
from tests.api.conftest import LiveServer, run_server
from tests.helpers.cli import run_cli

LOCAL_MINUTE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    def run(*args: str, columns: int = 200) -> tuple[int, str, str]:
        monkeypatch.setenv("COLUMNS", str(columns))
        return run_cli(monkeypatch, capsys, *args)

    return run


NOW = 1_796_000_000.0  # a fixed "now", so that the relative forms are exact


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (0.2, "just now"),
        (12.7, "12 s ago"),
        (180, "3 min ago"),
        (3599, "59 min ago"),
        (5 * 3600 + 9, "5 h ago"),
    ],
)
def test_the_last_day_reads_as_time_ago(ago: float, text: str) -> None:
    assert human_time(NOW - ago, now=NOW) == text


def test_older_and_future_moments_read_as_local_time() -> None:
    for moment in (NOW - 2 * 86400, NOW + 60):
        assert human_time(moment, now=NOW) == time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))


def test_iso_times_from_manifests_are_read_as_utc() -> None:
    assert human_time("2026-12-06T09:12:00Z", now=NOW) == local_time(1796548320.0)
    assert local_time("2026-12-06T09:12:00+00:00", seconds=True) == time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(1796548320.0)
    )


def test_apps_print_human_dates_and_json_keeps_the_epoch(cli) -> None:
    assert cli("apps", "create", "notes")[0] == 0
    code, out, _ = cli("apps", "show", "notes")
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("created_at")]
    assert line.split(None, 1)[1] in ("just now", "1 s ago", "2 s ago", "3 s ago")
    code, out, _ = cli("apps", "show", "notes", "--json")
    assert isinstance(json.loads(out)["created_at"], float)
    code, out, _ = cli("apps", "list")
    assert code == 0 and "CREATED" in out and re.search(r"notes .*(just now| s ago)", out)


def test_models_print_human_dates_and_json_keeps_iso(cli, tiny) -> None:
    code, out, _ = cli("models", "list")
    assert code == 0 and "PULLED" in out and re.search(r"tiny .*(just now| s ago)", out)
    code, out, _ = cli("models", "show", "tiny")
    assert re.search(r"created_at +(just now|\d+ s ago)", out)
    assert json.loads(cli("models", "show", "tiny", "--json")[1])["created_at"].endswith(("Z", "+00:00"))


def test_audit_prints_local_times(cli) -> None:
    cli("apps", "list")
    code, out, _ = cli("audit", "--limit", "1", columns=80)
    assert code == 0
    row = out.splitlines()[1]
    assert LOCAL_MINUTE.search(row) and "apps.list" in row
    assert all(len(line) <= 80 for line in out.splitlines())


@pytest.fixture
def long_named_server(tiny_gguf: Path) -> Iterator[LiveServer]:
    """A server whose model has a real model's long name, recorded where `ps` looks for it."""
    served = run_server(tiny_gguf, "smollm2-135m-instruct", EngineConfig(block_size=4, kv_cache_bytes=2**20))
    server = next(served)
    write_server_file(server.url)
    try:
        yield server
    finally:
        remove_server_file()
        next(served, None)


def test_ps_at_80_columns_keeps_the_whole_model_name(cli, long_named_server) -> None:
    body = {"model": long_named_server.model, "prompt": "a", "max_tokens": 2}
    assert long_named_server.client().post("/v1/completions", json=body).status_code == 200
    code, out, err = cli("ps", "--all", columns=80)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[:5] == ["PID", "APP", "MODEL", "STATE", "PRIORITY"]
    assert "admin smollm2-135m-instruct finished" in " ".join(row.split())
    assert all(len(line) <= 80 for line in out.splitlines())
