"""Secrets and personal data never in logs (docs/THREAT_MODEL.md, boundary B5: server -> disk and
operators). A workload full of canaries runs against a live server: keys (the admin's, an app's, a
guessed one), a person's name, email and card number in prompts, a service call and stored data,
requests that fail in several ways. Then every log record the server emitted at INFO and above, the
`/metrics` page and every file under $LLMASOS_HOME outside the app's own data are searched for them.

Identifiers an app chooses (model names, key names in `/os/kv/{key}`, file names) are recorded as
sent, in the audit log and, when the operator turns it on, the access log: the threat model says
so; the canaries here are in content, where personal data belongs.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import LiveServer

PERSON = "Jane Canarywood jane.canarywood@example.org 4111 1111 1111 1111"
STORED = "canary-stored-value-5521"
WRONG_KEY = "lmos-canaryGuessedKey0000000000000000000000000"
#: Where an app's own data lives by design (encrypted at rest by h3's work, not searched here).
APP_DATA = ("files", "data", "kv", "vector")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


@pytest.fixture
def records():
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("", "llmasos", "uvicorn", "uvicorn.error", "uvicorn.access")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _workload(server: LiveServer) -> str:
    with server.client() as admin:
        key = admin.post("/os/apps", json={"name": "canary"}).json()["api_key"]
    chat = {"model": "tiny", "messages": [{"role": "user", "content": PERSON}], "max_tokens": 3}
    with server.client(key) as app:
        assert app.post("/v1/chat/completions", json=chat).status_code == 200
        with app.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as stream:
            list(stream.iter_lines())
        app.post("/v1/completions", json={"model": "tiny", "prompt": PERSON, "max_tokens": 2})
        app.post("/os/services/classify", json={"input": PERSON, "params": {"labels": ["a", "b"]}})
        app.put("/os/kv/contact", json={"value": STORED})
        app.post("/v1/files", files={"file": ("c.txt", STORED.encode())}, data={"purpose": "assistants"})
        # failures that carry the canaries: wrong types, unknown model, too long, bad unicode
        app.post("/v1/chat/completions", json={**chat, "max_tokens": PERSON})
        app.post("/v1/chat/completions", json={**chat, "model": "no-such-model"})
        app.post("/v1/completions", json={"model": "tiny", "prompt": PERSON * 200, "max_tokens": 2})
        app.post(
            "/v1/chat/completions",
            content=b'{"model": "tiny", "messages": [{"role": "user", "content": "'
            + PERSON.encode()
            + b'\\ud800"}]}',
            headers={"content-type": "application/json"},
        )
        app.get("/os/kv/never-set")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {WRONG_KEY}"}) as guesser:
        guesser.get("/v1/models")
        guesser.post("/v1/chat/completions", json=chat)
    return key


def _searched_files(home: Path) -> list[Path]:
    """Every file but the app's own data and the admin's key file (which holds the key, 0600)."""
    return [
        p
        for p in home.rglob("*")
        if p.is_file()
        and p.name != "admin.key"
        and not any(part in APP_DATA for part in p.relative_to(home).parts[:-1])
    ]


def test_no_key_and_no_personal_data_in_logs_metrics_or_state(server: LiveServer, records, llmasos_home):
    app_key = _workload(server)
    with server.client() as admin:
        metrics = admin.get("/metrics").text
    canaries = {
        "the admin key": server.admin_key,
        "an app key": app_key,
        "a guessed key": WRONG_KEY,
        "a name": "Canarywood",
        "an email": "jane.canarywood@example.org",
        "a card number": "4111 1111 1111 1111",
        "a stored value": STORED,
    }
    places = {"the server's log": "\n".join(records.lines), "/metrics": metrics}
    for path in _searched_files(llmasos_home):
        places[str(path.relative_to(llmasos_home))] = path.read_bytes().decode("utf-8", "replace")
    assert records.lines, "the server logged nothing at all: the handler is not where the logs go"
    found = [
        f"{what} in {where}" for where, text in places.items() for what, c in canaries.items() if c in text
    ]
    assert not found, found
    assert stat.S_IMODE((llmasos_home / "admin.key").stat().st_mode) == 0o600
