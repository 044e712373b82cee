"""Personal data over HTTP, through the official `openai` package: the canary test (synthetic people
sent through chat, streamed chat, completions, a stored document, a search and the key-value store
by an app that
pseudonymizes: no value in any file under LLMASOS_HOME, the logs, /metrics or the engine's input,
every value back in the app's answers), and the block, analyze and app-policy endpoints."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from stdnum import luhn

from llmasos.api.app import create_app
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.library.store import ModelStore
from llmasos.security.admin import ensure_admin
from llmasos.security.apps import AppRegistry
from llmasos.security.audit import AuditLog
from tests.helpers.echo_engine import EchoEngine
from tests.helpers.fake_embedder import HashingEmbedder

FIRST = ["Amelia", "Oskar", "Priya", "Mateo", "Ingrid", "Tomasz", "Hannah", "Dmitri", "Sofia", "Kwame"]
STEMS = ["Lind", "Berg", "Nov", "Kowal", "Hadd", "Brenn", "Mor", "Okaf", "Nakam", "Silv", "Hald", "Ferr"]
ENDINGS = ["qvist", "ström", "ak", "ski", "ad", "an", "eau", "or", "ura", "a", "sen", "ini"]
PEOPLE_PER_MESSAGE = 4
#: 24 in the default run (a few seconds); the issue's 1,000 by hand: LLMASOS_CANARY_PEOPLE=1000.
CANARY_PEOPLE = int(os.environ.get("LLMASOS_CANARY_PEOPLE", "24"))


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    card: str

    @property
    def values(self) -> tuple[str, ...]:
        return (self.name, self.email, self.card)

    def sentence(self) -> str:
        return f"My name is {self.name}, my email is {self.email} and my card is {self.card}."


def synthetic_people(count: int, seed: int = 27) -> list[Person]:
    rng = random.Random(seed)
    people, names = [], set()
    while len(people) < count:
        name = f"{rng.choice(FIRST)} {rng.choice(STEMS)}{rng.choice(ENDINGS)}"
        if name in names:
            continue
        names.add(name)
        body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        email = name.lower().replace(" ", ".") + "@example.com"
        people.append(Person(name, email, body + luhn.calc_check_digit(body)))
    return people


@dataclass
class Server:
    http: TestClient
    syscalls: Syscalls
    engine: EchoEngine
    admin_key: str

    def new_app(self, name: str, **fields) -> str:
        response = self.http.post(
            "/os/apps", json={"name": name, **fields}, headers=self.auth(self.admin_key)
        )
        assert response.status_code == 201, response.text
        return response.json()["api_key"]

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=self.http)

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server() -> Iterator[Server]:
    engine = EchoEngine()
    kernel = Kernel(ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1), KernelConfig())
    syscalls = Syscalls(kernel, AppRegistry(), audit=AuditLog(), interface="http")
    syscalls.use_embedder(HashingEmbedder)
    _, admin_key = ensure_admin(syscalls.apps)
    with TestClient(create_app(syscalls)) as client:
        yield Server(client, syscalls, engine, admin_key)
    syscalls.close()


def test_canaries_leave_no_value_anywhere_and_come_back_restored(
    server: Server, llmasos_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    people = synthetic_people(CANARY_PEOPLE)
    key = server.new_app("canary", pii="pseudonymize", audit_content=True)
    client = server.openai(key)
    groups = [people[i : i + PEOPLE_PER_MESSAGE] for i in range(0, len(people), PEOPLE_PER_MESSAGE)]
    answers = []
    for i, group in enumerate(groups):
        text = " ".join(p.sentence() for p in group)
        messages = [{"role": "user", "content": text}]
        if i % 3 == 0:
            reply = client.chat.completions.create(model="echo", messages=messages, max_tokens=4000)
            answers.append(reply.choices[0].message.content)
        elif i % 3 == 1:
            stream = client.chat.completions.create(
                model="echo", messages=messages, max_tokens=4000, stream=True
            )
            answers.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
        else:
            answers.append(
                client.completions.create(model="echo", prompt=text, max_tokens=4000).choices[0].text
            )
    for group, answer in zip(groups, answers, strict=True):
        for person in group:
            assert all(value in answer for value in person.values), (person, answer)

    document = "\n".join(p.sentence() for p in people).encode()
    store = client.vector_stores.create(name="customers")
    uploaded = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("people.txt", document)
    )
    assert uploaded.status == "completed"
    assert client.files.content(uploaded.id).read() == document  # restored for the app
    hits = client.vector_stores.search(store.id, query=people[5].name, max_num_results=3)
    found = " ".join(part.text for hit in hits.data for part in hit.content)
    assert "<PERSON_" not in found and any(p.name in found for p in people)  # restored for the app
    if len(people) <= 100:  # among a thousand, a name's placeholder is one token of many alike
        assert people[5].name in found

    profile = {"name": people[0].name, "contact": [people[0].email, {"card": people[0].card}], "visits": 3}
    put = server.http.put("/os/kv/profile", json={"value": profile}, headers=server.auth(key))
    assert put.status_code == 200 and put.json()["value"] == profile
    assert server.http.get("/os/kv/profile", headers=server.auth(key)).json()["value"] == profile

    metrics = server.http.get("/metrics", headers=server.auth(server.admin_key)).text
    assert 'llmasos_pii_detections_total{app="canary",direction="prompts",type="PERSON"}' in metrics
    assert 'direction="documents",type="CREDIT_CARD"' in metrics
    server.syscalls.audit.close()  # flushed: what it wrote is on disk for the scan below
    leaks = _values_found(
        [p for person in people for p in person.values],
        {
            "the engine's input": "\n".join(server.engine.prompts),
            "/metrics": metrics,
            "the server's logs": _server_log(caplog.records),
            **_files_under(llmasos_home),
        },
    )
    assert leaks == {}
    assert len(server.engine.prompts) == len(groups)


def test_the_ollama_api_goes_through_the_same_policy(server: Server, tiny_gguf: Path) -> None:
    ModelStore().pull(str(tiny_gguf), name="echo", progress=False)  # Ollama's routes look models up
    key = server.new_app("llama-user", pii="pseudonymize")
    person = synthetic_people(1, seed=3)[0]
    body = {"model": "echo", "messages": [{"role": "user", "content": person.sentence()}], "stream": False}
    reply = server.http.post("/api/chat", json=body, headers=server.auth(key))
    assert reply.status_code == 200, reply.text
    assert all(value in reply.json()["message"]["content"] for value in person.values)
    assert not any(value in server.engine.prompts[-1] for value in person.values)


def test_block_refuses_with_the_types_found_and_never_the_values(server: Server) -> None:
    key = server.new_app("strict", pii="block")
    person = synthetic_people(1)[0]
    with pytest.raises(openai.BadRequestError) as refused:
        server.openai(key).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": person.sentence()}], max_tokens=8
        )
    error = refused.value.body
    assert refused.value.status_code == 400 and error["type"] == "personal_data_blocked"
    for kind in ("CREDIT_CARD", "EMAIL_ADDRESS", "PERSON"):
        assert kind in error["message"]
    assert not any(value in error["message"] for value in person.values)
    assert server.engine.prompts == []


def test_analyze_reports_types_and_spans_without_echoing_values(server: Server) -> None:
    key = server.new_app("checker")
    text = synthetic_people(1)[0].sentence()
    response = server.http.post("/os/pii/analyze", json={"text": text}, headers=server.auth(key))
    assert response.status_code == 200
    body = response.json()
    assert body["counts"] == {"PERSON": 1, "EMAIL_ADDRESS": 1, "CREDIT_CARD": 1}
    card = next(e for e in body["entities"] if e["type"] == "CREDIT_CARD")
    assert text[card["start"] : card["end"]] == synthetic_people(1)[0].card
    assert synthetic_people(1)[0].name not in response.text
    missing = server.http.post("/os/pii/analyze", json={}, headers=server.auth(key))
    assert missing.status_code == 422


def test_an_apps_policy_is_shown_and_a_bad_one_is_refused_clearly(server: Server) -> None:
    server.new_app("mixed", pii={"prompts": "redact", "audit": "redact"})
    shown = server.http.get("/os/apps/mixed", headers=server.auth(server.admin_key)).json()
    assert shown["pii"] == {"prompts": "redact", "outputs": "off", "documents": "off", "audit": "redact"}
    bad = server.http.post(
        "/os/apps", json={"name": "oops", "pii": {"outputs": "block"}}, headers=server.auth(server.admin_key)
    )
    assert (
        bad.status_code == 400 and "outputs takes off, pseudonymize, redact" in bad.json()["error"]["message"]
    )


def _server_log(records: list[logging.LogRecord]) -> str:
    """Every record but the test's own HTTP client's (openai logs the requests it sends at DEBUG)."""
    client = ("openai", "httpx", "httpcore")
    return "\n".join(r.getMessage() for r in records if not r.name.startswith(client))


def _files_under(home: Path) -> dict[str, str]:
    return {
        str(path.relative_to(home)): path.read_bytes().decode("utf-8", errors="replace")
        for path in home.rglob("*")
        if path.is_file()
    }


def _values_found(values: list[str], places: dict[str, str]) -> dict[str, list[str]]:
    found = {where: [v for v in values if v in text] for where, text in places.items()}
    return {where: hits for where, hits in found.items() if hits}
