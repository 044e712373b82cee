"""`/v1/files`, `/v1/vector_stores` and `/os/kv` over HTTP, driven by the official `openai` package
where it has a method (unchanged, over an in-process transport), with a hashing embedder."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from llmasos.api.app import create_app
from llmasos.api.limits import HttpLimits
from llmasos.data.pages import PageRequest
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App
from llmasos.security.audit import AuditLog
from tests.api.conftest import serving
from tests.api.test_admission_http import _raw_request
from tests.helpers.fake_embedder import HashingEmbedder
from tests.helpers.programs import syscalls_without_models

DOC = b"# Cats\n\nCats sleep all day long.\n\n# Dogs\n\nDogs bark at the mailman every morning.\n"


class Served:
    def __init__(self, client: TestClient, keys: dict[str, str]) -> None:
        self.http = client
        self.keys = keys

    def openai(self, app: str) -> openai.OpenAI:
        return openai.OpenAI(base_url="http://testserver/v1", api_key=self.keys[app], http_client=self.http)

    def call(self, app: str, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[app]}"}
        return self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def served() -> Iterator[Served]:
    syscalls = syscalls_without_models()
    syscalls.use_embedder(HashingEmbedder)
    keys = {}
    for name, caps in (("alpha", None), ("beta", None), ("root", ("admin",))):
        syscalls.apps.create(App(name, capabilities=caps) if caps else App(name))
        keys[name] = syscalls.apps.issue_key(name)
    with TestClient(create_app(syscalls)) as client:
        yield Served(client, keys)
    syscalls.close()


def test_the_openai_package_uploads_polls_and_searches(served: Served) -> None:
    client = served.openai("alpha")
    store = client.vector_stores.create(name="pets", metadata={"team": "a"})
    assert store.status == "completed" and store.file_counts.total == 0
    done = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("pets.md", DOC), attributes={"kind": "notes"}
    )
    assert done.status == "completed" and done.usage_bytes > 0 and done.attributes == {"kind": "notes"}
    results = client.vector_stores.search(store.id, query="who barks at the mailman", max_num_results=2)
    first = results.data[0]
    assert first.filename == "pets.md" and first.file_id == done.id
    assert first.content[0].text == "Dogs bark at the mailman every morning."
    assert first.attributes == {"kind": "notes"} and 0 < first.score <= 1
    filtered = client.vector_stores.search(
        store.id, query="dogs", filters={"type": "eq", "key": "kind", "value": "other"}
    )
    assert filtered.data == []
    assert client.files.content(done.id).read() == DOC
    texts = [part.text for part in client.vector_stores.files.content(done.id, vector_store_id=store.id)]
    assert texts == ["Cats sleep all day long.", "Dogs bark at the mailman every morning."]
    updated = client.vector_stores.files.update(
        done.id, vector_store_id=store.id, attributes={"kind": "other"}
    )
    assert updated.attributes == {"kind": "other"}
    refiltered = client.vector_stores.search(
        store.id, query="dogs", filters={"type": "eq", "key": "kind", "value": "other"}
    )
    assert refiltered.data[0].file_id == done.id
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 1


def test_files_and_stores_page_with_after_limit_and_has_more(served: Served) -> None:
    client = served.openai("alpha")
    ids = [client.files.create(file=(f"f{i}.txt", b"text %d" % i), purpose="assistants").id for i in range(5)]
    first = client.files.list(limit=2, order="asc")
    assert [f.id for f in first.data] == ids[:2] and first.has_more
    every = [f.id for f in client.files.list(limit=2, order="asc")]  # auto-paging follows `after`
    assert every == ids
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=client.vector_stores.create(name="b").id, file_ids=ids
    )
    assert batch.status == "completed" and batch.file_counts.completed == 5
    listed = client.vector_stores.file_batches.list_files(
        batch.id, vector_store_id=batch.vector_store_id, limit=3
    )
    assert len(listed.data) == 3 and listed.has_more
    deleted = client.files.delete(ids[0])
    assert deleted.deleted and ids[0] not in [f.id for f in client.files.list()]


def test_every_endpoint_answers_404_for_another_apps_ids(served: Served) -> None:
    alpha = served.openai("alpha")
    store = alpha.vector_stores.create(name="private")
    file = alpha.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("s.md", DOC))
    batch = alpha.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=[file.id])
    served.call("alpha", "PUT", "/os/kv/secret", json={"value": 1})
    s, f, b = store.id, file.id, batch.id
    calls = [
        ("GET", f"/v1/files/{f}", None),
        ("GET", f"/v1/files/{f}/content", None),
        ("DELETE", f"/v1/files/{f}", None),
        ("GET", f"/v1/vector_stores/{s}", None),
        ("POST", f"/v1/vector_stores/{s}", {"name": "mine now"}),
        ("DELETE", f"/v1/vector_stores/{s}", None),
        ("POST", f"/v1/vector_stores/{s}/files", {"file_id": f}),
        ("GET", f"/v1/vector_stores/{s}/files", None),
        ("GET", f"/v1/vector_stores/{s}/files/{f}", None),
        ("POST", f"/v1/vector_stores/{s}/files/{f}", {"attributes": {"a": "b"}}),
        ("GET", f"/v1/vector_stores/{s}/files/{f}/content", None),
        ("DELETE", f"/v1/vector_stores/{s}/files/{f}", None),
        ("POST", f"/v1/vector_stores/{s}/file_batches", {"file_ids": [f]}),
        ("GET", f"/v1/vector_stores/{s}/file_batches/{b}", None),
        ("POST", f"/v1/vector_stores/{s}/file_batches/{b}/cancel", None),
        ("GET", f"/v1/vector_stores/{s}/file_batches/{b}/files", None),
        ("POST", f"/v1/vector_stores/{s}/search", {"query": "cats"}),
        ("POST", f"/os/vector_stores/{s}/search", {"query": "cats"}),
        ("GET", "/os/kv/secret", None),
        ("DELETE", "/os/kv/secret", None),
    ]
    for method, path, body in calls:
        response = served.call("beta", method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "not_found_error"
    refused = [r for r in AuditLog().query(app="beta", limit=500) if r["outcome"] == "error"]
    assert len(refused) == len(calls)  # each written once, by the system call
    assert alpha.files.retrieve(f).id == f
    assert alpha.vector_stores.retrieve(s).file_counts.completed == 1


def test_bad_input_gets_clear_errors_and_writes_nothing(served: Served) -> None:
    client = served.openai("alpha")
    store = client.vector_stores.create(name="x")
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.files.create(file=("empty.txt", b""), purpose="assistants")
    bad_pdf = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("a.pdf", b"plain text")
    )
    assert bad_pdf.status == "failed" and bad_pdf.last_error.code == "unsupported_file"
    with pytest.raises(openai.BadRequestError, match="filter"):
        client.vector_stores.search(store.id, query="x", filters={"type": "between", "key": "a", "value": 1})
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve("vs_nope")
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.create(vector_store_id=store.id, file_id="file-nope")
    quota = served.call("root", "PUT", "/os/apps/alpha/data/quota", json={"max_bytes": 2000})
    assert quota.status_code == 200 and quota.json()["max_bytes"] == 2000
    before = len(client.files.list().data)
    with pytest.raises(openai.APIStatusError) as over:
        client.files.create(file=("big.txt", b"z" * 5000), purpose="assistants")
    assert over.value.status_code == 413 and "quota" in over.value.message
    assert len(client.files.list().data) == before
    usage = served.call("alpha", "GET", "/os/apps/alpha/data").json()
    assert usage["files"] == before and usage["max_bytes"] == 2000
    assert served.call("alpha", "GET", "/os/apps/beta/data").status_code == 403


def test_key_value_store_over_http(served: Served) -> None:
    assert served.call("alpha", "PUT", "/os/kv/user/1", json={"value": {"name": "Ada"}}).status_code == 200
    served.call("alpha", "PUT", "/os/kv/user/2", json={"value": [1, 2], "ttl_s": 60})
    assert served.call("alpha", "GET", "/os/kv/user/1").json()["value"] == {"name": "Ada"}
    listed = served.call("alpha", "GET", "/os/kv", params={"prefix": "user/"}).json()
    assert [k["key"] for k in listed["data"]] == ["user/1", "user/2"]
    assert served.call("alpha", "DELETE", "/os/kv/user/1").json()["deleted"]
    assert served.call("alpha", "GET", "/os/kv/user/1").status_code == 404
    assert served.call("alpha", "PUT", "/os/kv/x", json={"value": 1, "ttl_s": -1}).status_code == 422


def test_os_search_explains_ranks_and_cites_spans(served: Served) -> None:
    client = served.openai("alpha")
    store = client.vector_stores.create(name="pets")
    client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("pets.md", DOC))
    body = {"query": "dogs bark", "explain": True, "bm25_weight": 2.0, "max_results": 1}
    result = served.call("alpha", "POST", f"/os/vector_stores/{store.id}/search", json=body).json()["data"][0]
    start, end = result["span"]
    assert DOC.decode()[start:end] == result["text"] and result["heading"] == "Dogs"
    assert set(result["explain"]) == {"bm25", "vector"}
    bad = served.call(
        "alpha", "POST", f"/os/vector_stores/{store.id}/search", json={"query": "x", "mode": "magic"}
    )
    assert bad.status_code == 400 and "mode" in bad.json()["error"]["message"]


@pytest.fixture
def live_alpha() -> Iterator[tuple[str, dict, App, Syscalls]]:
    """A real uvicorn server (the test client reads a whole body before the app sees it) whose
    operator raised the body limit to 2 GiB, and an app `alpha` with 1 MiB of data quota."""

    syscalls = syscalls_without_models()
    syscalls.use_embedder(HashingEmbedder)
    alpha, root = (
        syscalls.apps.create(App("alpha")),
        syscalls.apps.create(App("root", capabilities=("admin",))),
    )
    syscalls.set_data_quota(root, "alpha", max_bytes=2**20, max_items=None)
    headers = {"Authorization": f"Bearer {syscalls.apps.issue_key('alpha')}"}
    app = create_app(syscalls, limits=HttpLimits(max_body_bytes=2 * 2**30))
    with serving(app, join_seconds=10) as url:
        yield url, headers, alpha, syscalls
    syscalls.close()


def test_an_upload_past_the_apps_quota_is_refused_while_it_is_read(live_alpha) -> None:
    """A 1 GiB upload to an app with 1 MiB of quota left: answered 413 (with the quota's message)
    from its declared length after its first bytes, or, sent chunked with no length, once 2 MiB of
    it are in: the server does not wait for the gigabyte. Nothing is written."""
    url, headers, alpha, syscalls = live_alpha
    boundary = "llmasos-test-boundary"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {headers['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}"
    )
    declared = _raw_request(url, f"{head}\r\nContent-Length: {2**30}", part + b"x" * 1000)
    two_mib = part + b"x" * (2 * 2**20)
    chunked = _raw_request(
        url, f"{head}\r\nTransfer-Encoding: chunked", b"%x\r\n%s\r\n" % (len(two_mib), two_mib)
    )
    for answer in (declared, chunked):
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        assert b"quota" in answer
    assert syscalls.list_files(alpha, PageRequest())["data"] == []
    assert syscalls.data_usage(alpha, "alpha")["bytes"] == 0
    fits = httpx.post(
        f"{url}/v1/files",
        headers=headers,
        files={"file": ("ok.txt", b"fits")},
        data={"purpose": "assistants"},
    )
    assert fits.status_code == 200, fits.text
