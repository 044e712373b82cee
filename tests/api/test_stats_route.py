"""`/os/stats` over HTTP: an analyst's private release carries its budget, exact figures are refused
with 403, and a spent budget is a 403 in OpenAI's error shape that says what to do."""

from __future__ import annotations


def test_stats_over_http(tiny_server) -> None:
    analyst = tiny_server.client(tiny_server.new_app("analyst"))
    admin = tiny_server.client()
    assert admin.put("/os/stats/budgets/analyst", json={"epsilon": 1.5}).json()["total"] == 1.5
    first = analyst.get("/os/stats", params={"epsilon": 1})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["exact"] is False and body["budget"] == {"total": 1.5, "spent": 1.0, "remaining": 0.5}
    assert len(body["days"]) == 7 and {r["app"] for r in body["data"]} >= {"analyst", "admin"}
    refused = analyst.get("/os/stats", params={"epsilon": 1})
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "privacy_budget_exhausted"
    assert "ask an admin" in refused.json()["error"]["message"]
    assert analyst.get("/os/stats", params={"exact": "true"}).status_code == 403
    exact = admin.get("/os/stats", params={"exact": "true"}).json()
    assert exact["exact"] is True and exact["budget"] is None
    assert analyst.get("/os/stats", params={"since": "yesterday"}).status_code == 400
    # schemathesis's subnormal epsilon overflowed the noise scale to infinity: a 500
    for bad in ("2.2250738585e-313", "0", "-1", "11", "nan", "inf"):
        refused = analyst.get("/os/stats", params={"epsilon": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert "epsilon must be a number from 0.001 to 10" in refused.json()["error"]["message"]
    assert admin.put("/os/stats/budgets/analyst", json={"epsilon": 1e-313}).status_code == 400
