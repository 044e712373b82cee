"""The CLI's views of a cluster: `ps` gains a NODE column only when processes run on nodes."""

from __future__ import annotations

from rich.console import Console

from llmasos.cli.processes import process_table


def render(rows: list[dict]) -> str:
    console = Console(width=200, record=True)
    console.print(process_table(rows))
    return console.export_text()


def row(pid: int, **extra) -> dict:
    return {
        "pid": pid, "app": "etl", "model": "tiny", "state": "running", "priority": "normal",
        "tokens_in": 5, "tokens_out": 2, "waited_seconds": 0.0, "running_seconds": 1.0, **extra,
    }  # fmt: skip


def test_ps_shows_the_node_of_each_process_on_a_cluster() -> None:
    text = render([row(1, node="n1"), row(2, node="n2")])
    header, first, second = text.splitlines()[:3]
    assert "NODE" in header and " n1 " in first and " n2 " in second


def test_ps_on_one_box_has_no_node_column() -> None:
    assert "NODE" not in render([row(1)])
