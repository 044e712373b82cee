"""The context assembly of `services/memory.py` on its own: a word counter for tokens and rows made
here, so each rule can be seen to decide (what is kept verbatim, what is recalled and why, when a
summary is asked for, that an oversize message is shortened rather than refused)."""

from __future__ import annotations

from llmasos.data.conversations import Item, Memory
from llmasos.services.memory import MESSAGE_OVERHEAD, Limits, fit


def words(text: str) -> int:
    return len(text.split())


def items(texts: list[str], first_seq: int = 1) -> list[Item]:
    return [
        Item(
            first_seq + n, f"msg_{first_seq + n}", "user" if n % 2 == 0 else "assistant", t, words(t), "m", 0
        )
        for n, t in enumerate(texts)
    ]


def test_recent_turns_fill_their_share_and_older_ones_are_recalled_by_shared_words() -> None:
    history = items(
        ["my passport number is 4471 " + "x " * 15] + [f"filler {n} " + "y " * 15 for n in range(20)]
    )
    limits = Limits(window=300, max_output=50, summarize_after=40)
    found = fit(
        words,
        limits,
        None,
        None,
        history,
        lambda before: [h for h in history if h.seq < before and "passport" in h.text],
        [("user", "what is my passport number")],
    )
    kinds = {b["kind"]: b for b in found.explain["blocks"]}
    assert kinds["recent"]["items"][-1] == history[-1].id  # the newest turn, verbatim
    assert kinds["recalled"]["items"] == [{"id": "msg_1", "matched": ["number", "passport"]}]
    assert "4471" in found.messages[0]["content"]  # in the system block, as an earlier message
    assert sum(words(m["content"]) + MESSAGE_OVERHEAD for m in found.messages) <= limits.budget
    after, upto = found.to_summarize
    assert after == 0 and upto < found.recent[0].seq  # turns that fell out of the window


def test_nothing_is_recalled_without_a_shared_content_word_and_no_summary_below_the_threshold() -> None:
    history = items(["the cat sleeps", "ok", "the dog barks", "ok"])
    found = fit(
        words, Limits(300, 50, 40), None, None, history, lambda before: history, [("user", "what time is it")]
    )
    kinds = [b["kind"] for b in found.explain["blocks"]]
    assert "recalled" not in kinds and found.to_summarize is None
    # The earlier turns are one transcript in the system message; the new message comes last, alone.
    assert [m["role"] for m in found.messages] == ["system", "user"]
    assert found.messages[-1]["content"] == "what time is it"
    assert found.messages[0]["content"].splitlines()[1:] == [
        "[1970-01-01]",
        "user: the cat sleeps",
        "assistant: ok",
        "user: the dog barks",
        "assistant: ok",
    ]


def test_the_transcript_marks_left_out_turns_and_each_new_day() -> None:
    """A recalled old turn and the recent ones are one transcript, oldest first, with "..." where
    turns between them were left out and a day line where the day changes: the model can tell an
    old remark from the last thing said, and when each was said."""
    day = 86_400
    history = [
        Item(
            n,
            f"msg_{n}",
            "user",
            f"{'the boat is blue' if n == 1 else 'filler'} " + "z " * 20,
            25,
            "m",
            n * day // 2,
        )
        for n in range(1, 41)
    ]
    found = fit(
        words,
        Limits(window=300, max_output=50, summarize_after=40),
        None,
        None,
        history,
        lambda before: [h for h in history if h.seq < before and "boat" in h.text],
        [("user", "what colour is the boat")],
    )
    lines = found.messages[0]["content"].splitlines()
    kinds = {b["kind"]: b for b in found.explain["blocks"]}
    recent = [h for h in history if h.id in kinds["recent"]["items"]]
    assert kinds["recalled"]["items"][0]["id"] == "msg_1"
    assert recent[-1] == history[-1] and len(recent) < len(history) - 1
    boat = lines.index(next(line for line in lines if "boat is blue" in line))
    assert lines[boat - 1] == "[1970-01-01]" and lines[boat + 1] == "..."
    shown_days = [line for line in lines if line.startswith("[")]
    recent_days = sorted({f"[1970-01-{1 + h.created_at // day:02d}]" for h in recent})
    assert shown_days == ["[1970-01-01]", *recent_days]
    assert lines[-1].startswith("user: filler")  # the newest turn ends it: no gap before the question
    assert [m["role"] for m in found.messages] == ["system", "user"]


def test_core_facts_and_summary_lead_and_an_oversize_message_is_shortened_not_refused() -> None:
    memory = Memory("conv_1", ["The user is Ada."], "They talked about trains.", 4, False)
    message = "word " * 1000
    found = fit(words, Limits(200, 50, 40), "Be brief.", memory, [], lambda before: [], [("user", message)])
    system = found.messages[0]["content"]
    assert system.startswith("Be brief.") and "The user is Ada." in system and "trains" in system
    assert "shortened to fit" in found.messages[-1]["content"]
    assert words(found.messages[-1]["content"]) < 150
    assert found.explain["blocks"][1]["kind"] == "input_shortened"
