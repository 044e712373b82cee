"""The conversation-memory benchmark's scoring and bookkeeping (the replay and the model's answers
are the benchmark's own business; these decide what its table says and which replay it reuses)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.conversation_memory import all_words, contains, replayed, select_questions, token_f1


def test_containment_is_exact_and_all_words_meets_a_date_or_list_written_another_way() -> None:
    assert contains("She went on 7 May, 2023.", "7 May 2023") == 1.0
    assert contains("On May 7, 2023", "7 May 2023") == 0.0  # the phrase, in its order
    assert all_words("On May 7, 2023", "7 May 2023") == 1.0
    assert all_words("dinosaurs and nature", "nature, dinosaurs") == 1.0
    assert all_words("dinosaurs", "nature, dinosaurs") == 0.0
    assert token_f1("May 7, 2023", "7 May 2023") == 1.0
    # 3 of the reply's 8 words, all 3 of the answer's: F1 2 * (3/8 * 1) / (3/8 + 1)
    assert token_f1("Caroline went to the group on 7 May 2023", "7 May 2023") == pytest.approx(6 / 11)


def _args(**fields) -> argparse.Namespace:
    defaults = {"per_category": 0, "shuffle": None, "skip": 0, "questions": 0}
    return argparse.Namespace(**(defaults | fields))


QA = [{"question": f"q{n}", "answer": "a", "evidence": [f"D1:{n}"], "category": 1 + n % 5} for n in range(20)]


def test_questions_need_their_evidence_replayed_and_a_shuffle_is_a_stable_sample() -> None:
    replayed_turns = {f"D1:{n}" for n in range(10)}
    chosen = select_questions(QA, replayed_turns, _args())
    assert [q["question"] for q in chosen] == ["q0", "q1", "q2", "q3", "q5", "q6", "q7", "q8"]  # no cat 5
    shuffled = select_questions(QA, replayed_turns, _args(shuffle=7))
    assert sorted(q["question"] for q in shuffled) == sorted(q["question"] for q in chosen)
    assert shuffled == select_questions(QA, replayed_turns, _args(shuffle=7))
    assert select_questions(QA, replayed_turns, _args(per_category=1, questions=3)) == chosen[:3]


def test_a_recorded_replay_is_reused_and_one_of_another_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmasos.services import responses, summaries

    paged = []
    monkeypatch.setattr(responses, "page", lambda syscalls, app, model, cid, out: paged.append((model, cid)))
    monkeypatch.setattr(summaries, "wait_idle", lambda timeout: paged.append("waited"))
    state = tmp_path / "state.json"
    record = {"model": "m", "conversation": "conv-1", "window": 2048, "replayed": 2, "last": "resp_1"}
    record |= {"conversation_id": "c1", "costs": [1.0], "errors": 0, "replay_s": 3.0}
    state.write_text(json.dumps(record))
    args = argparse.Namespace(state=state, conversation="conv-1", window=2048, max_output=24)
    turns = [{"dia_id": f"D1:{n}"} for n in range(3)]
    assert replayed(None, None, "m", turns, args)["last"] == "resp_1"  # not replayed again
    assert paged == [("m", "c1"), "waited"]  # a summary still due is written before the questions
    with pytest.raises(SystemExit, match="another replay"):
        replayed(None, None, "other", turns, args)
    with pytest.raises(SystemExit, match="holds 3 turns, not 4"):
        replayed(None, None, "m", [*turns, {"dia_id": "D1:3"}], args)
