"""Conversation memory that pages: the context of a new message, assembled within the model's window.

What goes in, in this order of precedence (MemGPT's idea, done by the system):
1. the instructions, the conversation's core facts and the running summary of older turns;
2. the new message itself (shortened in its middle only if it alone passes the window);
3. the most recent turns verbatim, up to `RECENT_SHARE` of what is left;
4. older turns recalled by BM25 over the conversation when they share content words with the new
   message, in what is left after that; then more recent turns with any room still free.

How it is laid out: one system message with the instructions, then the labelled core facts and
summary, then the earlier turns (recalled and recent) as one transcript, oldest first, one line per
turn with its role, a line with the day whenever it changes and "..." where turns were left out;
then the new message(s) last, as the messages to answer. Earlier turns are not replayed as chat
messages of their own: a long run of same-role messages (items added without answers) reads to a
small model as a transcript to continue, not as a question to answer.
Turns that fell out of the verbatim window and are not yet in the summary are handed back
(`Assembly.to_summarize`) once they pass `summarize_after` tokens, for the background summarizer.
Every choice is recorded in `Assembly.explain`, which `GET /os/responses/{id}/context` returns.

`fit` is pure (a token counter and the rows in, messages and reasons out); `assemble` reads the
rows through the system calls.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmasos.data.conversations import Item, Memory
from llmasos.data.search import STOPWORDS

#: Share of the room after the fixed parts that recent turns may take before recall is offered the
#: rest: recent turns carry the thread of the talk, recalled ones the facts a question asks about.
RECENT_SHARE = 0.6
#: Older turns looked up per message.
RECALL_CANDIDATES = 6
#: Tokens a chat template adds around one message (role markers), an upper bound for the templates
#: in the catalog (ChatML: 5; Llama 3: 5; Gemma: 6); the whole prompt is counted exactly at the end.
MESSAGE_OVERHEAD = 6
_WORD = re.compile(r"\w+")
CORE_HEADER = "Facts to keep in mind:"
SUMMARY_HEADER = "Summary of the conversation so far:"
TRANSCRIPT_HEADER = 'Earlier messages of this conversation, oldest first ("..." marks messages left out):'
GAP_LINE = "..."
#: Tokens of one transcript line besides its text: the role label and the line break.
LINE_OVERHEAD = 4
#: Tokens kept for the day lines of the transcript ("[2026-12-06]"); the exact count at the end
#: settles any excess.
DAY_LINE = 8
#: Tokens of the blank line that joins two parts of the system message (counted generously).
JOIN = 2

Count = Callable[[str], int]


@dataclass(frozen=True)
class Limits:
    window: int  # the model's context length
    max_output: int  # tokens kept free for the answer
    summarize_after: int  # out-of-window unsummarized tokens that ask for a summary

    @property
    def budget(self) -> int:
        return max(16, self.window - self.max_output - 1)

    @classmethod
    def of(cls, window: int, max_output: int | None) -> Limits:
        """Limits for a model window: the answer gets what was asked, at most a quarter of it."""
        output = min(max_output or 256, max(16, window // 4))
        return cls(window, output, max(64, window // 8))


@dataclass
class Assembly:
    messages: list[dict]
    explain: dict
    to_summarize: tuple[int, int] | None = None  # (after seq, up to seq) of turns to fold in
    recent: list[Item] = field(default_factory=list)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def _shorten(text: str, tokens: int, limit: int) -> str:
    """`text` cut in its middle to about `limit` tokens (by its share of characters)."""
    if tokens <= limit or not text:
        return text
    keep = max(0, int(len(text) * limit / tokens) - 40)
    marker = "\n[... shortened to fit the context window ...]\n"
    return text[: keep // 2] + marker + text[len(text) - keep // 2 :]


def _item_line(item: Item) -> str:
    return f"{item.role}: {item.text}"


def fit(
    count: Count,
    limits: Limits,
    instructions: str | None,
    memory: Memory | None,
    history: list[Item],
    recall: Callable[[int], list[Item]],
    inputs: list[tuple[str, str]],
) -> Assembly:
    """The messages for the model and why each part is there. `history`: the items after the
    summary, oldest first, with their token counts; `recall(before_seq)`: older items matching the
    new message, best first."""
    budget, blocks = limits.budget, []
    core = memory.core if memory else []
    summary = memory.summary if memory else ""
    head = [instructions or ""]
    if core:
        head.append(CORE_HEADER + "\n" + "\n".join(f"- {fact}" for fact in core))
        blocks.append({"kind": "core", "facts": len(core), "reason": "the conversation's core facts"})
    fixed = sum(count(part) + JOIN for part in head) + MESSAGE_OVERHEAD
    summary, summary_tokens, inputs, input_tokens, shortened = _always_in(
        count, budget, fixed, summary, inputs
    )
    if shortened:
        blocks.append(shortened)
    if summary:
        head.append(SUMMARY_HEADER + "\n" + summary)
        blocks.append(
            {
                "kind": "summary",
                "covers_upto_seq": memory.summary_upto if memory else 0,
                "tokens": summary_tokens,
                "reason": "older turns, summarized in the background",
            }
        )
    transcript_fixed = count(TRANSCRIPT_HEADER) + JOIN + DAY_LINE
    left = budget - fixed - summary_tokens - sum(input_tokens) - transcript_fixed
    recent, used = _recent(history, int(left * RECENT_SHARE))
    window_start = recent[0].seq if recent else (history[-1].seq + 1 if history else 1 << 62)
    query = " ".join(text for role, text in inputs if role == "user") or (inputs[-1][1] if inputs else "")
    # A gap line may come before each recalled turn (and after the last one).
    recalled, recall_used, matched = _recalled(recall(window_start), query, left - used, count)
    more, more_used = _recent(
        [i for i in history if i.seq < window_start and i.seq not in {r.seq for r in recalled}],
        left - used - recall_used,
    )
    recent = sorted(more + recent, key=lambda i: i.seq) if more else recent
    if recalled:
        blocks.append(
            {
                "kind": "recalled",
                "items": [{"id": i.id, "matched": sorted(matched[i.seq])} for i in recalled],
                "tokens": recall_used,
                "reason": "older turns sharing content words with the new message (BM25), in the transcript",
            }
        )
    if recent:
        blocks.append(
            {
                "kind": "recent",
                "items": [i.id for i in recent],
                "tokens": used + more_used,
                "reason": f"the last {len(recent)} turns, verbatim, in the transcript",
            }
        )
    blocks.append({"kind": "input", "messages": len(inputs), "tokens": sum(input_tokens)})
    to_summarize = _paging(
        history, recent[0].seq if recent else window_start, recalled, memory, limits, blocks
    )
    covered = memory.summary_upto if memory else 0
    earlier = sorted(recalled + recent, key=lambda i: i.seq)
    if earlier:
        head.append(TRANSCRIPT_HEADER + "\n" + transcript(earlier, [i.seq for i in history], covered))
    system = "\n\n".join(part for part in head if part)
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": _role(role), "content": text} for role, text in inputs]
    explain = {"window": limits.window, "budget": budget, "max_output_tokens": limits.max_output}
    return Assembly(messages, {**explain, "blocks": blocks}, to_summarize, recent)


def transcript(items: list[Item], thread: list[int], covered: int) -> str:
    """`items` (oldest first) as transcript lines: a day line whenever the day changes, and a gap
    line where the thread (`thread`: the seqs after the summary, which covers up to `covered`) has
    turns between two of them that are not shown."""
    lines: list[str] = []
    day = None
    for n, item in enumerate(items):
        if n and not _follows(items[n - 1].seq, item.seq, thread, covered):
            lines.append(GAP_LINE)
        item_day = _day(item)
        if item_day != day:
            lines.append(f"[{item_day}]")
            day = item_day
        lines.append(_item_line(item))
    if items and not _follows(items[-1].seq, None, thread, covered):
        lines.append(GAP_LINE)
    return "\n".join(lines)


def _day(item: Item) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(item.created_at))


def _follows(before: int, after: int | None, thread: list[int], covered: int) -> bool:
    """Whether the turn `after` (None: the new message) comes right after `before` in the thread."""
    if before < covered:
        return False  # the turns after `before` up to the summary's end are in the summary only
    later = [seq for seq in thread if seq > before]
    return (later[0] == after) if later else after is None


def _always_in(
    count: Count, budget: int, fixed: int, summary: str, inputs: list[tuple[str, str]]
) -> tuple[str, int, list[tuple[str, str]], list[int], dict | None]:
    """The summary and the new message made to fit beside the fixed parts: the summary yields first
    (to a quarter of the budget), then the new message's middle. (summary, its tokens, inputs, their
    tokens, the explain block of a shortened message or None)."""
    summary_tokens = count(summary) + count(SUMMARY_HEADER) + JOIN if summary else 0
    input_tokens = [count(text) + MESSAGE_OVERHEAD for _, text in inputs]
    room_for_summary = max(0, budget // 4)
    if summary_tokens > room_for_summary:
        summary = _shorten(summary, summary_tokens, room_for_summary)
        summary_tokens = count(summary) + count(SUMMARY_HEADER) + JOIN
    over = fixed + summary_tokens + sum(input_tokens) - budget
    if over <= 0 or not inputs:
        return summary, summary_tokens, inputs, input_tokens, None
    role, text = inputs[-1]
    limit = max(8, input_tokens[-1] - over - MESSAGE_OVERHEAD - 16)
    inputs = [*inputs[:-1], (role, _shorten(text, input_tokens[-1], limit))]
    input_tokens[-1] = count(inputs[-1][1]) + MESSAGE_OVERHEAD
    reason = f"the new message alone passed the window by {over} tokens"
    return summary, summary_tokens, inputs, input_tokens, {"kind": "input_shortened", "reason": reason}


def _paging(
    history: list[Item],
    start: int,
    recalled: list[Item],
    memory: Memory | None,
    limits: Limits,
    blocks: list[dict],
) -> tuple[int, int] | None:
    """The turns before the verbatim window (from `start`) that the summary does not cover yet: noted
    in `blocks` when some are in no part of the context, and handed back for summarizing once they
    pass `limits.summarize_after` tokens."""
    covered = memory.summary_upto if memory else 0
    pending = [i for i in history if i.seq < start]
    left_out = len(pending) - len([r for r in recalled if r.seq > covered])
    if left_out > 0:
        blocks.append(
            {"kind": "left_out", "items": left_out, "reason": "older turns not yet summarized, not recalled"}
        )
    if pending and sum(i.tokens or 0 for i in pending) >= limits.summarize_after:
        return covered, pending[-1].seq
    return None


def _role(role: str) -> str:
    return "system" if role == "developer" else role


def _recent(history: list[Item], room: int) -> tuple[list[Item], int]:
    """The newest items of `history` that fit in `room` tokens together (oldest first), each a
    transcript line (with a day line where the day changes)."""
    taken, used = [], 0
    for item in reversed(history):
        cost = (item.tokens or 0) + LINE_OVERHEAD
        if taken and _day(item) != _day(taken[-1]):
            cost += DAY_LINE
        if used + cost > room:
            break
        taken.append(item)
        used += cost
    return taken[::-1], used


def _recalled(
    candidates: list[Item], query: str, room: int, count: Count
) -> tuple[list[Item], int, dict[int, set[str]]]:
    wanted = content_words(query)
    taken, used, matched = [], 0, {}
    for item in candidates:
        cost = count(_item_line(item)) + 1 + len(GAP_LINE)  # its line, and a gap line before it
        shared = wanted & content_words(item.text)
        if not shared or used + cost > room:
            continue
        taken.append(item)
        matched[item.seq] = shared
        used += cost
    return taken, used, matched


def assemble(
    syscalls: Any,
    app: Any,
    tokenizer: Any,
    model: str,
    conversation_id: str | None,
    upto: int | None,
    instructions: str | None,
    inputs: list[tuple[str, str]],
    limits: Limits,
) -> Assembly:
    """`fit` over a conversation's rows read through the system calls (`conversation_id` None: no
    history). Token counts missing for `model` are computed and kept for the next turn."""
    count = lambda text: len(tokenizer.encode(text))  # noqa: E731
    memory, history = None, []
    if conversation_id is not None:
        memory = syscalls.conversation_memory(app, conversation_id)
        history = syscalls.conversation_items_after(app, conversation_id, memory.summary_upto, upto)
        history = _counted(syscalls, app, history, count, model)
    before_upto = (upto + 1) if upto is not None else None

    def recall(before_seq: int) -> list[Item]:
        if conversation_id is None:
            return []
        limit = min(before_seq, before_upto) if before_upto is not None else before_seq
        query = " ".join(text for role, text in inputs if role == "user")
        found = syscalls.recall_items(app, conversation_id, query, limit, RECALL_CANDIDATES)
        return _counted(syscalls, app, found, count, model)

    assembly = fit(count, limits, instructions, memory, history, recall, inputs)
    # The estimate above is per part; the template's exact count decides (a margin of error
    # drops the oldest verbatim turn until it fits).
    target = limits.budget
    # (No messages at all: paging an empty conversation with no new message; nothing to count.)
    while assembly.messages and len(tokenizer.encode_chat(assembly.messages)) > target and limits.budget > 16:
        limits = Limits(limits.window, limits.max_output + 32, limits.summarize_after)
        assembly = fit(count, limits, instructions, memory, history, recall, inputs)
    return assembly


def _counted(syscalls: Any, app: Any, items: list[Item], count: Count, model: str) -> list[Item]:
    fresh = []
    out = []
    for item in items:
        if item.tokens is None or item.tokens_model != model:
            tokens = count(item.text)
            fresh.append((item.seq, tokens))
            item = Item(item.seq, item.id, item.role, item.text, tokens, model, item.created_at)
        out.append(item)
    if fresh:
        syscalls.remember_token_counts(app, fresh, model)
    return out
