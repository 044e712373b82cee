"""The running summary of a conversation, rewritten in the background when turns fall out of the
context window (`memory.Assembly.to_summarize`).

The summarizing call is an ordinary `chat` system call of the app at the `batch` priority class,
so the kernel schedules it behind interactive work and charges it to the app. One summary per
conversation runs at a time; the new summary is written only if nobody moved it meanwhile.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from llmasos.errors import LLMasOSError
from llmasos.programs import Cancellation
from llmasos.services.base import Call, Session

log = logging.getLogger(__name__)

SYSTEM = (
    "You keep the memory of a conversation. Rewrite the summary so far together with the new "
    "messages into one short summary that keeps names, dates, places, numbers and decisions."
)
SHORT_SYSTEM = "Update the summary."
#: The summary's length in tokens: an eighth of the window, so that it never crowds out the turns.
MAX_SUMMARY_SHARE = 8

_pool = ThreadPoolExecutor(1, thread_name_prefix="llmasos-summaries")
_running: dict[tuple[str, str], Future] = {}
_cancellations: dict[tuple[str, str], Cancellation] = {}
_lock = threading.Lock()


def request_summary(
    syscalls: Any, app: Any, model: str, conversation_id: str, after: int, upto: int, window: int
) -> Future | None:
    """Fold the turns (after, upto] into the conversation's summary in the background; None when a
    summary of this conversation is already being written."""
    key = (app.identity, conversation_id)
    with _lock:
        if key in _running and not _running[key].done():
            return None
        cancellation = _cancellations[key] = Cancellation()
        future = _pool.submit(
            _summarize, syscalls, app, model, conversation_id, after, upto, window, cancellation
        )
        _running[key] = future
        return future


def wait_idle(timeout: float = 60.0) -> None:
    """Wait for the summaries being written now (tests, benchmarks, shutdown)."""
    with _lock:
        pending = list(_running.values())
    for future in pending:
        future.result(timeout)


def cancel_running() -> None:
    """End the summaries being written (a server stopping): the next turn asks for them again."""
    with _lock:
        pending = list(_cancellations.values())
        _cancellations.clear()
    for cancellation in pending:
        cancellation.set()


def _summarize(
    syscalls: Any,
    app: Any,
    model: str,
    conversation_id: str,
    after: int,
    upto: int,
    window: int,
    cancellation: Cancellation,
) -> None:
    try:
        memory = syscalls.conversation_memory(app, conversation_id)
        if memory.summary_upto != after:
            return  # another summary got there first
        items = syscalls.conversation_items_after(app, conversation_id, after, upto)
        session = Session(syscalls, app, model, cancellation, priority="batch")
        summary_tokens = max(32, min(256, window // MAX_SUMMARY_SHARE))
        system, room = _instructions(session.tokenizer, window, summary_tokens)
        if room <= 0:
            log.info("a %d-token window has no room for summarizing", window)
            return
        summary = memory.summary
        for group in _groups(items, room, session.tokenizer):
            lines = "\n".join(f"{i.role}: {i.text}" for i in group)
            messages = _fitted(session.tokenizer, system, summary, lines, window - summary_tokens - 1)
            summary = session.chat(Call(messages, summary_tokens)).text.strip()
        if items:
            syscalls.set_conversation_summary(app, conversation_id, summary, items[-1].seq, after)
    except LLMasOSError as err:  # the conversation was deleted, the model unloaded, ...
        log.info("summary of a conversation not written: %s", err.type)
    except Exception:  # a background task must not die silently
        log.exception("summarizing a conversation failed")


def _instructions(tokenizer: Any, window: int, summary_tokens: int) -> tuple[str, int]:
    """The system prompt and the tokens left for new messages beside it, the old summary (at most
    `summary_tokens`) and the new one; a shorter prompt when a small window has no room for ours."""
    for system in (SYSTEM, SHORT_SYSTEM):
        empty = [
            {"role": "system", "content": system},
            {"role": "user", "content": "Summary so far:\n\nNew messages:\n\nThe new summary:"},
        ]
        room = window - len(tokenizer.encode_chat(empty)) - 2 * summary_tokens - 8
        if room >= 2 * summary_tokens:
            break
    return system, room


def _fitted(tokenizer: Any, system: str, summary: str, lines: str, limit: int) -> list[dict]:
    """The summarizing prompt within `limit` tokens: counts are estimates until the template's
    own, so the old summary and the oldest lines are cut by quarters until it fits."""
    while True:
        prompt = f"Summary so far:\n{summary or '(none)'}\n\nNew messages:\n{lines}\n\nThe new summary:"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        if len(tokenizer.encode_chat(messages)) <= limit or not (summary or lines):
            return messages
        summary = summary[: len(summary) * 3 // 4]
        lines = lines[len(lines) // 4 :]


def _groups(items: list, room: int, tokenizer: Any) -> list[list]:
    """Consecutive items whose lines fit in `room` tokens together (a longer one is cut)."""
    groups: list[list] = [[]]
    used = 0
    for item in items:
        cost = item.tokens if item.tokens is not None else len(tokenizer.encode(item.text))
        if cost > room:
            item = type(item)(
                item.seq,
                item.id,
                item.role,
                item.text[: max(1, len(item.text) * room // cost)],
                room,
                item.tokens_model,
                item.created_at,
            )
            cost = room
        if used + cost > room and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += cost + 4
    return [g for g in groups if g]
