"""`/os/stats`: usage per app and day, differentially private for analysts (an epsilon per request,
charged to the caller's budget), exact for admins with `exact=true`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from llmasos.api.auth import Caller

router = APIRouter(tags=["stats"])


class BudgetSet(BaseModel):
    epsilon: float


@router.get("/os/stats")
def usage_stats(
    request: Request,
    app: Caller,
    since: str | None = None,
    until: str | None = None,
    epsilon: float | None = None,
    exact: bool = False,
) -> dict:
    return request.app.state.syscalls.usage_stats(app, since=since, until=until, epsilon=epsilon, exact=exact)


@router.put("/os/stats/budgets/{name}")
def set_budget(name: str, body: BudgetSet, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.set_privacy_budget(app, name, body.epsilon)
