"""The `clock` tool: the current date and time, in UTC or an IANA time zone (zoneinfo)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from llmasos.errors import InvalidRequestError
from llmasos.tools.base import Tool, ToolContext, ToolResult


def now(timezone: str = "UTC", *, timestamp: float | None = None) -> dict:
    """The time `timestamp` (default: now) in `timezone`, as the clock tool reports it."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequestError(
            f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris' or 'America/New_York'"
        ) from None
    stamp = time.time() if timestamp is None else timestamp
    moment = datetime.fromtimestamp(stamp, UTC).astimezone(zone)
    offset = moment.strftime("%z")
    return {
        "iso": moment.isoformat(timespec="seconds"),
        "date": moment.date().isoformat(),
        "time": moment.strftime("%H:%M:%S"),
        "weekday": moment.strftime("%A"),
        "timezone": timezone,
        "utc_offset": f"{offset[:3]}:{offset[3:]}",
        "unix": round(stamp, 3),
    }


class ClockTool(Tool):
    name = "clock"
    description = "Tell the current date, time and weekday, in UTC or in a given IANA time zone."
    examples: ClassVar[tuple[str, ...]] = (
        "What time is it?",
        "What day of the week is it today?",
        "Tell me the current date",
        "What is the time in London now?",
    )
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "default": "UTC",
                "description": "IANA time zone name, e.g. 'Europe/Paris'; default UTC",
            }
        },
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "iso": {"type": "string"},
            "date": {"type": "string"},
            "time": {"type": "string"},
            "weekday": {"type": "string"},
            "timezone": {"type": "string"},
            "utc_offset": {"type": "string"},
            "unix": {"type": "number"},
        },
        "required": ["iso", "date", "time", "weekday", "timezone", "utc_offset", "unix"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        return ToolResult(self.name, now(args["timezone"]))
