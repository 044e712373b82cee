"""The peer of workflow_chaos.py: the same five steps as a LangGraph graph with its SQLite checkpointer,
its worker process SIGKILLed while nodes run and started again. Run in a venv with
benchmarks/requirements-langgraph.txt; prints its figures as one JSON line (workflow_chaos.py reads it).

    python benchmarks/workflow_chaos_langgraph.py [--runs 50] [--kills 20] [--seed 0] [--max-delay 0.5]
        [--step-seconds 0.3]

The kill schedule is workflow_chaos.py's: waves of runs, after each a random delay drawn from the
same seed, then a wait until a node has started and not ended (so every kill cuts work short), then
SIGKILL and a restart. The worker resumes every unfinished thread (one per run) with
`graph.invoke(None, config)`, as LangGraph's docs resume a thread. The model steps are sleeps of
`--step-seconds` (workflow_chaos.py passes the median of its own chat steps); the side effect inserts
a row into effects.db, as a node that writes would: LangGraph gives a node no idempotency key to
make a re-run write once. Counted from the stores: runs finished (the last checkpoint has the text),
rows per run in effects.db, node executions beyond one per (run, node), executions that started
after that node's checkpoint was written, and restart-to-progress (from spawning the worker to the
first checkpoint a resumed thread writes).
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
import traceback
from datetime import datetime
from pathlib import Path

NODES = ("draft", "remember", "double", "reply", "tidy")


class Log:
    """The harness's own record of node executions and side effects (one connection per process).
    synchronous=OFF: a SIGKILL loses nothing the OS was handed, and the harness must not slow the
    nodes it measures with an fsync per row."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS executions (run TEXT, node TEXT, started REAL, ended REAL)"
        )
        self.conn.execute("CREATE TABLE IF NOT EXISTS effects (run TEXT, at REAL)")

    def started(self, run: str, node: str) -> int:
        return self.conn.execute(
            "INSERT INTO executions VALUES (?, ?, ?, NULL)", (run, node, time.time())
        ).lastrowid

    def ended(self, row: int) -> None:
        self.conn.execute("UPDATE executions SET ended = ? WHERE rowid = ?", (time.time(), row))

    def effect(self, run: str) -> None:
        self.conn.execute("INSERT INTO effects VALUES (?, ?)", (run, time.time()))


def build_graph(home: Path, step_seconds: float, log: Log | None = None):
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

    def logged(name, body):
        def node(state: State) -> dict:
            row = log.started(state["run"], name)
            out = body(state)
            log.ended(row)
            return out

        return node

    def draft(state: State) -> dict:
        time.sleep(step_seconds)
        return {"draft": f"note {state['n']}"}

    def remember(state: State) -> dict:
        log.effect(state["run"])
        return {}

    def double(state: State) -> dict:
        return {"value": state["n"] * 2}

    def reply(state: State) -> dict:
        time.sleep(step_seconds)
        return {"reply": f"{state['value']}: {state['draft']}"}

    def tidy(state: State) -> dict:
        return {"text": " ".join(state["reply"].split())}

    graph = StateGraph(State)
    for name, body in zip(NODES, (draft, remember, double, reply, tidy), strict=True):
        graph.add_node(name, logged(name, body))
    graph.add_edge(START, "draft")
    for a, b in itertools.pairwise(NODES):
        graph.add_edge(a, b)
    graph.add_edge("tidy", END)
    conn = sqlite3.connect(home / "checkpoints.db", check_same_thread=False)
    return graph.compile(checkpointer=SqliteSaver(conn))


def worker(home: Path, step_seconds: float) -> None:
    """Run every submitted run to its end, resuming those with a checkpoint; new runs keep coming."""
    from concurrent.futures import ThreadPoolExecutor

    graph = build_graph(home, step_seconds, Log(home / "log.db"))

    def drive(run: str, n: int) -> None:
        config = {"configurable": {"thread_id": run}}
        state = graph.get_state(config)
        if state.values and not state.next:
            return  # finished before the kill
        try:
            # durability="sync": each step's checkpoint is written before the next step starts, as
            # LLMasOS commits a result before what needs it (the default, "async", may lose it)
            graph.invoke(None if state.values else {"run": run, "n": n}, config, durability="sync")
        except Exception:  # said on stderr: a run that stops so would otherwise just never finish
            traceback.print_exc()

    started: set[str] = set()
    with ThreadPoolExecutor(64) as pool:
        while True:
            submitted = home / "submitted.txt"
            text = submitted.read_text() if submitted.exists() else ""
            for line in text.split("\n")[:-1]:  # whole lines: the harness may be writing the last one
                run, n = line.split()
                if run not in started:
                    started.add(run)
                    pool.submit(drive, run, int(n))
            time.sleep(0.02)


class Checkpoints:
    """The harness's reading of the checkpointer: which threads finished, when each node committed."""

    def __init__(self, home: Path) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.saver = SqliteSaver(sqlite3.connect(home / "checkpoints.db", check_same_thread=False))

    def commits(self, run: str) -> dict[str, float]:
        """When each node of `run`'s thread was committed: the time of the first checkpoint that
        records the node as run (its `versions_seen`; step numbers shift when a thread resumes)."""
        committed: dict[str, float] = {}
        try:
            for found in self.saver.list({"configurable": {"thread_id": run}}):
                at = _epoch(found.checkpoint["ts"])
                for node in set(found.checkpoint["versions_seen"]) & set(NODES):
                    committed[node] = min(at, committed.get(node, at))
        except sqlite3.OperationalError:  # no table yet: the worker has not set up
            pass
        return committed

    def finished(self, run: str) -> bool:
        return NODES[-1] in self.commits(run)


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _rows(home: Path, sql: str, params: tuple = ()) -> list:
    try:
        with sqlite3.connect(home / "log.db", timeout=30) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []


def wait_for_open_node(home: Path, since: float, unfinished, timeout: float = 120) -> bool:
    """Until a node the current worker started has not ended (True), or no run is left (False)."""
    deadline, checked = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        if _rows(home, "SELECT 1 FROM executions WHERE ended IS NULL AND started >= ? LIMIT 1", (since,)):
            return True
        if time.monotonic() - checked > 0.2:
            if not unfinished():
                return False
            checked = time.monotonic()
        time.sleep(0.005)
    return False


def time_to_progress(
    checkpoints: Checkpoints, runs: list[str], spawned: float, timeout: float = 300
) -> float:
    """From spawning the worker to the first checkpoint any of `runs` writes after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = [t for r in runs for t in checkpoints.commits(r).values() if t > spawned]
        if after:
            return min(after) - spawned
        time.sleep(0.02)
    return float("nan")


def count(home: Path, checkpoints: Checkpoints, runs: list[str]) -> dict:
    effects: dict[str, int] = {}
    for (run,) in _rows(home, "SELECT run FROM effects"):
        effects[run] = effects.get(run, 0) + 1
    executions = _rows(home, "SELECT run, node, started FROM executions")
    commits = {r: checkpoints.commits(r) for r in runs}
    per_node: dict[tuple[str, str], int] = {}
    after_commit = 0
    for run, node, started in executions:
        per_node[(run, node)] = per_node.get((run, node), 0) + 1
        committed = commits.get(run, {}).get(node)
        after_commit += committed is not None and started > committed
    return {
        "runs": len(runs),
        "statuses": {"succeeded": sum(NODES[-1] in c for c in commits.values())},
        "runs_with_one_effect": sum(effects.get(r) == 1 for r in runs),
        "duplicate_effects": sum(max(0, c - 1) for c in effects.values()),
        "node_reexecutions": sum(c - 1 for c in per_node.values() if c > 1),
        "reruns_after_commit": after_commit,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(v for v in values if v == v)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def run_chaos(args: argparse.Namespace, home: Path) -> dict:
    rng = random.Random(args.seed)
    command = [sys.executable, __file__, "--worker", str(home), "--step-seconds", str(args.step_seconds)]
    checkpoints = Checkpoints(home)
    runs, progress, interrupted_per_kill, n = [], [], [], 0
    spawned = time.time()
    process = subprocess.Popen(command)
    per_wave = [args.runs // args.kills + (1 if i < args.runs % args.kills else 0) for i in range(args.kills)]
    for wave in per_wave:
        with open(home / "submitted.txt", "a") as out:
            for _ in range(wave):
                runs.append(f"run{n}")
                out.write(f"run{n} {n}\n")
                n += 1
        time.sleep(rng.uniform(0.05, args.max_delay))
        wait_for_open_node(home, spawned, lambda: any(not checkpoints.finished(r) for r in runs))
        process.send_signal(signal.SIGKILL)
        process.wait()
        interrupted_per_kill.append(
            len(_rows(home, "SELECT 1 FROM executions WHERE ended IS NULL AND started >= ?", (spawned,)))
        )
        resumed = [r for r in runs if not checkpoints.finished(r)]
        spawned = time.time()
        process = subprocess.Popen(command)
        if resumed:
            progress.append(time_to_progress(checkpoints, resumed, spawned))
    deadline = time.monotonic() + 600
    while count(home, checkpoints, runs)["statuses"]["succeeded"] < len(runs) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return {
        **count(home, checkpoints, runs),
        "kills": args.kills,
        "kills_interrupting_work": sum(1 for i in interrupted_per_kill if i),
        "steps_interrupted": sum(interrupted_per_kill),
        "restart_to_progress_p50_s": percentile(progress, 0.5),
        "restart_to_progress_p95_s": percentile(progress, 0.95),
        "model_step_seconds": args.step_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.5)
    parser.add_argument("--step-seconds", type=float, default=0.3)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.step_seconds)
        return
    with tempfile.TemporaryDirectory(prefix="langgraph-chaos-") as tmp:
        started = time.monotonic()
        figures = run_chaos(args, Path(tmp))
        figures["wall_s"] = time.monotonic() - started
    print(json.dumps(figures))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
