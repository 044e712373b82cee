"""`/os/kv`: each app's key-value store (JSON values, optional time to live)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from llmasos.api.auth import Caller

router = APIRouter(tags=["kv"])


class KvSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="any JSON value")
    ttl_s: float | None = Field(None, gt=0, description="seconds until the key expires; absent: never")


@router.get("/os/kv")
def list_keys(
    request: Request, app: Caller, prefix: str = "", limit: int = 100, after: str | None = None
) -> dict:
    """The app's live keys in order, from `after`, starting with `prefix`."""
    return request.app.state.syscalls.kv_list(app, prefix, limit, after)


@router.get("/os/kv/{key:path}")
def get_key(key: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.kv_get(app, key)


@router.put("/os/kv/{key:path}")
def set_key(key: str, body: KvSet, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.kv_set(app, key, body.value, body.ttl_s)


@router.delete("/os/kv/{key:path}")
def delete_key(key: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.kv_delete(app, key)
