"""`/os/stats`: usage per app and day, differentially private for analysts (an epsilon per request,
charged to the budget of the caller's API key), exact for admins with `exact=true`.

What a key without admin may see: the released (noisy) requests, tokens and service calls of every
app per day, and its own key's budget; never exact figures, and nothing once its budget is spent.
An admin grants a key its budget with `PUT /os/stats/budgets/{app}` (`key`: the key's id or hint;
without it, every key of the app)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from llmasos.api.auth import Caller, bearer_key
from llmasos.security.apps import key_id

router = APIRouter(tags=["stats"])


class BudgetSet(BaseModel):
    epsilon: float
    key: str | None = None  # one key of the app, by id or hint (GET /os/apps/{name}); None: each key


@router.get("/os/stats")
def usage_stats(
    request: Request,
    app: Caller,
    since: str | None = None,
    until: str | None = None,
    epsilon: float | None = None,
    exact: bool = False,
) -> dict:
    key = bearer_key(request.headers)
    return request.app.state.syscalls.usage_stats(
        app, since=since, until=until, epsilon=epsilon, exact=exact, key_id=key_id(key) if key else None
    )


@router.put("/os/stats/budgets/{name}")
def set_budget(name: str, body: BudgetSet, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.set_privacy_budget(app, name, body.epsilon, body.key)
