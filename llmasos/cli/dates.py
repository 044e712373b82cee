"""Dates as people read them: "3 min ago" for the last day, local time ("2026-12-06 09:12") before
that. Tables and `show` commands print these; `--json` keeps the machine values (epochs, ISO 8601)."""

from __future__ import annotations

import time
from datetime import datetime


def epoch_of(moment: float | str) -> float:
    """Seconds since the epoch of an epoch or an ISO 8601 string (manifests store UTC ISO times)."""
    if isinstance(moment, int | float):
        return float(moment)
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def local_time(moment: float | str, *, seconds: bool = False) -> str:
    """`2026-12-06 09:12` (with `:05` when `seconds`) in the local time zone."""
    return time.strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""), time.localtime(epoch_of(moment)))


def human_time(moment: float | str, now: float | None = None) -> str:
    """ "just now", "12 s ago", "3 min ago", "5 h ago" within the last day; the local time otherwise (the
    future, from a clock that moved back, included)."""
    ago = (time.time() if now is None else now) - epoch_of(moment)
    if ago < 0 or ago >= 86400:
        return local_time(moment)
    if ago < 1:
        return "just now"
    if ago < 60:
        return f"{int(ago)} s ago"
    if ago < 3600:
        return f"{int(ago // 60)} min ago"
    return f"{int(ago // 3600)} h ago"
