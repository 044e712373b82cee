"""The peer of workflow_chaos.py: the same five steps as a LangGraph graph with its SQLite checkpointer,
its worker process SIGKILLed at random moments and started again. Run in a venv with
benchmarks/requirements-langgraph.txt; prints its figures as one JSON line (workflow_chaos.py reads it).

    python benchmarks/workflow_chaos_langgraph.py [--runs 50] [--kills 20] [--step-seconds 0.3]

The worker runs every unfinished thread (one per run) with `graph.invoke(None, config)` after a
restart, as LangGraph's docs resume a thread. The model steps are sleeps of `--step-seconds` (the
LLMasOS side measures its own); the side effect inserts a row into effects.db, as a node that
writes would — LangGraph gives a node no idempotency key to make a re-run write once. Counted from
the stores: runs finished, rows per run in effects.db, node executions per (run, node) beyond one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODES = ("draft", "remember", "double", "reply", "tidy")


def _log(home: Path, run: str, node: str) -> None:
    with sqlite3.connect(home / "executions.db", timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS executions (run TEXT, node TEXT, at REAL)")
        conn.execute("INSERT INTO executions VALUES (?, ?, ?)", (run, node, time.time()))


def build_graph(home: Path, step_seconds: float):
    from typing import TypedDict

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        run: str
        n: int
        draft: str
        value: int
        reply: str
        text: str

    def draft(state: State) -> dict:
        _log(home, state["run"], "draft")
        time.sleep(step_seconds)
        return {"draft": f"note {state['n']}"}

    def remember(state: State) -> dict:
        _log(home, state["run"], "remember")
        with sqlite3.connect(home / "effects.db", timeout=30) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS effects (run TEXT, at REAL)")
            conn.execute("INSERT INTO effects VALUES (?, ?)", (state["run"], time.time()))
        return {}

    def double(state: State) -> dict:
        _log(home, state["run"], "double")
        return {"value": state["n"] * 2}

    def reply(state: State) -> dict:
        _log(home, state["run"], "reply")
        time.sleep(step_seconds)
        return {"reply": f"{state['value']}: {state['draft']}"}

    def tidy(state: State) -> dict:
        _log(home, state["run"], "tidy")
        return {"text": " ".join(state["reply"].split())}

    graph = StateGraph(State)
    for name, fn in zip(NODES, (draft, remember, double, reply, tidy), strict=True):
        graph.add_node(name, fn)
    graph.add_edge(START, "draft")
    for a, b in itertools.pairwise(NODES):
        graph.add_edge(a, b)
    graph.add_edge("tidy", END)
    conn = sqlite3.connect(home / "checkpoints.db", check_same_thread=False)
    return graph.compile(checkpointer=SqliteSaver(conn))


def worker(home: Path, step_seconds: float) -> None:
    """Run every submitted run to its end, resuming those with a checkpoint; new runs keep coming."""
    from concurrent.futures import ThreadPoolExecutor

    graph = build_graph(home, step_seconds)
    (home / "worker.started").write_text(str(time.time()))

    def drive(run: str, n: int) -> None:
        config = {"configurable": {"thread_id": run}}
        state = graph.get_state(config)
        if state.values.get("text"):
            return
        graph.invoke(None if state.values else {"run": run, "n": n}, config)
        with sqlite3.connect(home / "done.db", timeout=30) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS done (run TEXT PRIMARY KEY)")
            conn.execute("INSERT OR IGNORE INTO done VALUES (?)", (run,))

    started: set[str] = set()
    with ThreadPoolExecutor(64) as pool:
        while True:
            submitted = home / "submitted.txt"
            for line in submitted.read_text().splitlines() if submitted.exists() else ():
                run, n = line.split()
                if run not in started:
                    started.add(run)
                    pool.submit(drive, run, int(n))
            time.sleep(0.05)


def count(home: Path, runs: list[str]) -> dict:
    def rows(db: str, sql: str) -> list:
        try:
            with sqlite3.connect(home / db) as conn:
                return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []

    done = {r for (r,) in rows("done.db", "SELECT run FROM done")}
    effects: dict[str, int] = {}
    for (run,) in rows("effects.db", "SELECT run FROM effects"):
        effects[run] = effects.get(run, 0) + 1
    executions = rows("executions.db", "SELECT run, node, COUNT(*) FROM executions GROUP BY run, node")
    return {
        "runs": len(runs),
        "statuses": {"succeeded": len(done & set(runs))},
        "runs_with_one_effect": sum(effects.get(r) == 1 for r in runs),
        "duplicate_effects": sum(max(0, c - 1) for c in effects.values()),
        "node_reexecutions": sum(c - 1 for _, _, c in executions if c > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-seconds", type=float, default=0.3)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.step_seconds)
        return
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="langgraph-chaos-") as tmp:
        home = Path(tmp)
        command = [sys.executable, __file__, "--worker", str(home), "--step-seconds", str(args.step_seconds)]
        runs, progress, n = [], [], 0
        process = subprocess.Popen(command)
        per_wave = [
            args.runs // args.kills + (1 if i < args.runs % args.kills else 0) for i in range(args.kills)
        ]
        for wave in per_wave:
            with open(home / "submitted.txt", "a") as out:
                for _ in range(wave):
                    runs.append(f"run{n}")
                    out.write(f"run{n} {n}\n")
                    n += 1
            time.sleep(rng.uniform(0.05, 2.0))
            had_work = count(home, runs)["statuses"]["succeeded"] < len(runs)
            process.send_signal(signal.SIGKILL)
            process.wait()
            spawned = time.time()
            process = subprocess.Popen(command)
            if had_work:
                progress.append(_time_to_progress(home, spawned))
        deadline = time.monotonic() + 600
        while count(home, runs)["statuses"]["succeeded"] < len(runs) and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        figures = count(home, runs)
    progress = sorted(p for p in progress if p == p)
    figures["kills"] = args.kills
    if progress:
        figures["restart_to_progress_p50_s"] = progress[len(progress) // 2]
        figures["restart_to_progress_p95_s"] = progress[
            min(len(progress) - 1, round(0.95 * (len(progress) - 1)))
        ]
    figures["reruns_after_commit"] = "n/a"
    print(json.dumps(figures))


def _time_to_progress(home: Path, spawned: float, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(home / "executions.db", timeout=30) as conn:
                latest = conn.execute("SELECT MAX(at) FROM executions").fetchone()[0] or 0
        except sqlite3.OperationalError:
            latest = 0
        if latest > spawned:
            return latest - spawned
        time.sleep(0.02)
    return float("nan")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
