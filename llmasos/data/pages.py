"""OpenAI's cursor pagination: `after` (an id), `limit` (1-100), `order` (asc/desc by creation)."""

from __future__ import annotations

from dataclasses import dataclass

from llmasos.errors import InvalidRequestError

MAX_LIMIT = 100


@dataclass(frozen=True)
class PageRequest:
    limit: int = 20
    after: str | None = None
    order: str = "desc"

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequestError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {self.limit!r}")
        if self.order not in ("asc", "desc"):
            raise InvalidRequestError(f"order must be 'asc' or 'desc', got {self.order!r}")

    def order_sql(self, created: str = "created_at", id_: str = "id") -> str:
        direction = "ASC" if self.order == "asc" else "DESC"
        return f"{created} {direction}, rowid {direction}"


def page(objects: list[dict], request: PageRequest) -> dict:
    """The list object of the page after `request.after` in `objects` (already in order)."""
    start = 0
    if request.after is not None:
        ids = [o["id"] for o in objects]
        if request.after not in ids:
            raise InvalidRequestError(
                f"after={request.after!r} names nothing in this list; pass an id from it"
            )
        start = ids.index(request.after) + 1
    data = objects[start : start + request.limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + request.limit < len(objects),
    }
