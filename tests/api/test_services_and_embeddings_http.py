"""System services and embeddings through HTTP and the SDK, checked and audited like every call."""

from __future__ import annotations

import math

import openai
import pytest

import llmasos
from llmasos.errors import PermissionDeniedError
from llmasos.security.audit import AuditLog


def test_services_are_listed_with_their_schemas(tiny_server):
    services = {s["name"]: s for s in tiny_server.client().get("/os/services").json()["services"]}
    for name in ("summarize", "translate", "qa", "code", "classify", "extract", "chat"):
        assert name in services and services[name]["params_schema"]["type"] == "object"


def test_classify_over_http_answers_one_of_the_labels(tiny_server):
    r = tiny_server.client().post(
        "/os/services/classify",
        json={"input": "I loved it", "params": {"labels": ["positive", "negative"]}, "model": "tiny"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] in ("positive", "negative")  # the random model is constrained to a label
    assert body["usage"]["completion_tokens"] >= 1
    (row,) = AuditLog().query(app="admin", outcome="ok")
    assert row["call"] == "service.classify" and row["tokens_out"] >= 1


def test_service_errors_are_4xx(tiny_server):
    client = tiny_server.client()
    r = client.post("/os/services/nope", json={"input": "x"})
    assert r.status_code == 404 and "summarize" in r.json()["error"]["message"]
    r = client.post("/os/services/classify", json={"input": "x", "params": {"labels": []}, "model": "tiny"})
    assert r.status_code in (400, 422)
    r = client.post(
        "/os/services/translate", json={"input": "x", "params": {"colour": "red"}, "model": "tiny"}
    )
    assert r.status_code == 400 and "colour" in r.json()["error"]["message"]
    narrow = tiny_server.client(tiny_server.new_app("narrow", capabilities=("model:*", "service:summarize")))
    r = narrow.post(
        "/os/services/classify", json={"input": "x", "params": {"labels": ["a", "b"]}, "model": "tiny"}
    )
    assert r.status_code == 403
    assert AuditLog().query(app="narrow", outcome="denied")


def test_sdk_call_reaches_the_service_and_raises_its_errors(tiny_server):
    client = llmasos.Client(tiny_server.url, tiny_server.admin_key, model="tiny")
    assert client.call("classify", "great stuff", labels=["yes", "no"]) in ("yes", "no")
    narrow = llmasos.Client(
        tiny_server.url, tiny_server.new_app("n2", capabilities=("model:*",)), model="tiny"
    )
    with pytest.raises(PermissionDeniedError):
        narrow.call("classify", "x", labels=["a", "b"])


def test_embeddings_through_the_openai_client(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=tiny_server.admin_key, max_retries=0)
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock prices fell sharply today."]
    result = client.embeddings.create(model="all-minilm-l6-v2", input=texts)
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2] and len(vectors[0]) == 384
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    assert result.usage.prompt_tokens > 0
    sdk = llmasos.Client(tiny_server.url, tiny_server.admin_key)
    (mine,) = sdk.embed(texts[0])
    assert mine == pytest.approx(vectors[0], abs=1e-5)
