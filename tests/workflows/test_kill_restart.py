"""The chaos check, small: a real `llmasos serve` SIGKILLed while a step of a run is running, started
again, and the stores read afterwards (benchmarks/workflow_chaos.py runs the full one: 50 runs, 20
kills)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_runs_survive_sigkill_with_each_side_effect_once(llmasos_home: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from workflow_chaos import run_chaos
    finally:
        sys.path.remove(str(BENCHMARKS))
    figures = run_chaos(llmasos_home, runs=3, kills=2, seed=1, max_delay=0.1, chat_tokens=256)
    # The gate kills while a model step (256 tokens, about a second here) is open; a wave's last
    # step can still commit in the instant between the gate seeing it and the kill, so at least one
    # kill, not both, is certain to land inside a step; every step a kill did cut short ran again.
    assert figures["kills_interrupting_work"] >= 1
    assert figures["attempts_resumed_after_kill"] >= figures["steps_interrupted"] >= 1
    assert len(figures["progress_s"]) >= 1
    assert figures["statuses"] == {"succeeded": 3}
    assert figures["runs_with_one_effect"] == 3 and figures["duplicate_effects"] == 0
    assert figures["triples"] == 3
    assert figures["reruns_after_commit"] == 0
