"""The knowledge graph tool (triples per app, in SQLite) and the clock tool."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmasos.errors import InvalidRequestError
from llmasos.security.apps import App
from llmasos.tools.builtin import builtin_tools
from llmasos.tools.clock import now
from llmasos.tools.registry import ToolContext, ToolRegistry


def _knowledge(registry: ToolRegistry, app: str, **args) -> dict:
    return registry.call("knowledge", args, ToolContext(App(app))).output


def _triples(output: dict) -> list[tuple]:
    return [(t["subject"], t["relation"], t["object"], t.get("direction")) for t in output["triples"]]


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(builtin_tools())


def test_add_then_query_by_entity_in_both_directions_and_by_relation(registry: ToolRegistry) -> None:
    for s, r, o in [
        ("Ada Lovelace", "born in", "London"),
        ("Ada Lovelace", "worked with", "Charles Babbage"),
        ("Charles Babbage", "designed", "Analytical Engine"),
        ("Alan Turing", "born in", "London"),
    ]:
        assert _knowledge(registry, "notes", operation="add", subject=s, relation=r, object=o)["changed"]

    about_babbage = _knowledge(registry, "notes", operation="query", entity="Charles Babbage")
    assert _triples(about_babbage) == [
        ("Ada Lovelace", "worked with", "Charles Babbage", "incoming"),
        ("Charles Babbage", "designed", "Analytical Engine", "outgoing"),
    ]
    born_in_london = _knowledge(registry, "notes", operation="query", entity="london", relation="born in")
    assert [t[0] for t in _triples(born_in_london)] == ["Ada Lovelace", "Alan Turing"]
    every_birth = _knowledge(registry, "notes", operation="query", relation="BORN IN")
    assert len(every_birth["triples"]) == 2 and "direction" not in every_birth["triples"][0]
    assert len(_knowledge(registry, "notes", operation="query", limit=3)["triples"]) == 3


def test_duplicates_are_ignored_and_remove_deletes_one_triple(registry: ToolRegistry) -> None:
    fact = {"subject": "Paris", "relation": "capital of", "object": "France"}
    assert _knowledge(registry, "a", operation="add", **fact)["changed"] is True
    again = {"subject": " paris ", "relation": "Capital Of", "object": "france"}
    assert _knowledge(registry, "a", operation="add", **again)["changed"] is False
    assert _knowledge(registry, "a", operation="add", subject="Paris", relation="in", object="Europe")[
        "changed"
    ]
    assert _knowledge(registry, "a", operation="remove", **again)["changed"] is True
    assert _knowledge(registry, "a", operation="remove", **fact)["changed"] is False
    assert _triples(_knowledge(registry, "a", operation="query", entity="Paris")) == [
        ("Paris", "in", "Europe", "outgoing")
    ]


def test_triples_persist_across_registry_instances(registry: ToolRegistry) -> None:
    _knowledge(registry, "diary", operation="add", subject="Bob", relation="likes", object="tea")
    fresh = ToolRegistry(builtin_tools())  # a new tool instance opens the same file under $LLMASOS_HOME
    assert _triples(_knowledge(fresh, "diary", operation="query", entity="tea")) == [
        ("Bob", "likes", "tea", "incoming")
    ]


def test_apps_cannot_see_or_remove_each_others_triples(registry: ToolRegistry) -> None:
    _knowledge(registry, "alice", operation="add", subject="secret", relation="is", object="42")
    assert _knowledge(registry, "mallory", operation="query", entity="secret")["triples"] == []
    assert _knowledge(registry, "mallory", operation="query")["triples"] == []
    removed = _knowledge(
        registry, "mallory", operation="remove", subject="secret", relation="is", object="42"
    )
    assert removed["changed"] is False
    assert len(_knowledge(registry, "alice", operation="query", entity="secret")["triples"]) == 1


def test_bad_knowledge_requests_are_clear_errors(registry: ToolRegistry) -> None:
    with pytest.raises(InvalidRequestError, match="missing: relation, object"):
        _knowledge(registry, "a", operation="add", subject="x")
    with pytest.raises(InvalidRequestError, match="field 'operation'"):
        _knowledge(registry, "a", operation="forget")
    with pytest.raises(InvalidRequestError, match="subject is empty"):
        _knowledge(registry, "a", operation="add", subject="   ", relation="r", object="o")


def test_clock_in_a_time_zone() -> None:
    moment = datetime(2026, 7, 1, 12, 0, tzinfo=UTC).timestamp()
    paris = now("Europe/Paris", timestamp=moment)
    assert (paris["date"], paris["time"], paris["weekday"], paris["utc_offset"]) == (
        "2026-07-01",
        "14:00:00",
        "Wednesday",
        "+02:00",
    )
    assert now("America/New_York", timestamp=moment)["iso"] == "2026-07-01T08:00:00-04:00"
    assert now(timestamp=moment)["iso"] == "2026-07-01T12:00:00+00:00"


def test_clock_tool_reads_the_current_time_and_refuses_unknown_zones(registry: ToolRegistry) -> None:
    before = datetime.now(UTC).timestamp()
    output = registry.call("clock", {}, ToolContext(App("a"))).output
    after = datetime.now(UTC).timestamp()
    assert before - 1 <= output["unix"] <= after + 1 and output["timezone"] == "UTC"
    with pytest.raises(InvalidRequestError, match="unknown time zone 'Mars/Olympus'"):
        registry.call("clock", {"timezone": "Mars/Olympus"}, ToolContext(App("a")))
    with pytest.raises(InvalidRequestError, match="unknown time zone"):
        registry.call("clock", {"timezone": "../../etc/passwd"}, ToolContext(App("a")))
