"""The statistics system calls: usage per app and day, differentially private for analysts, exact for
admins (kernel/private_stats.py says what is protected and how)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmasos.errors import AuditIntegrityError, InvalidRequestError, PermissionDeniedError
from llmasos.kernel.private_stats import (
    DEFAULT_EPSILON,
    TOKEN_CLAMP,
    Cell,
    PrivacyBudgets,
    check_epsilon,
    day_range,
    exact_figures,
    release,
)
from llmasos.security.apps import App, AppRegistry

if TYPE_CHECKING:
    from llmasos.kernel.call_trail import CallTrail
    from llmasos.security.audit import AuditLog

MECHANISM = "discrete Laplace (OpenDP make_laplace), epsilon split evenly over requests, tokens and services"


class StatsCalls:
    """Mixed into `Syscalls`, which provides `apps`, `trail` and `audit`."""

    apps: AppRegistry
    trail: CallTrail
    audit: AuditLog | None
    _privacy_budgets: PrivacyBudgets | None = None

    @property
    def privacy_budgets(self) -> PrivacyBudgets:
        if self._privacy_budgets is None:
            self._privacy_budgets = PrivacyBudgets()
        return self._privacy_budgets

    def usage_stats(
        self,
        caller: App,
        *,
        since: str | None = None,
        until: str | None = None,
        epsilon: float | None = None,
        exact: bool = False,
        key_id: str | None = None,
    ) -> dict[str, Any]:
        """Requests, tokens and service calls per app and day. `exact` (admins only) gives the true
        figures; otherwise they are released with differential privacy at `epsilon`, charged to the
        budget of the caller's API key (`key_id`; in-process callers, who have none, to the app's),
        refused with PrivacyBudgetError once spent."""
        with self.trail.audited(caller, "stats.exact" if exact else "stats.private", ""):
            if exact and not caller.is_admin:
                raise PermissionDeniedError(
                    f"app {caller.name!r} may not see exact usage figures; it needs the admin capability "
                    "(ask without exact for private figures)"
                )
            if self.audit is None:
                raise AuditIntegrityError(
                    "usage statistics come from the audit log, which this server runs without"
                )
            days = day_range(since, until)
            apps = [a.name for a in self.apps.list()]
            eps = None if exact else check_epsilon(DEFAULT_EPSILON if epsilon is None else epsilon)
            analyst = analyst_id(caller, key_id)
            budget = None if eps is None else self.privacy_budgets.spend(analyst, eps)
            figures = exact_figures(self.audit.db, apps, days)
            shown = figures if eps is None else release(figures, eps)
            return {
                "object": "usage_stats",
                "exact": eps is None,
                "epsilon": eps,
                "mechanism": None if eps is None else MECHANISM,
                "unit_of_privacy": "one request",
                "token_clamp": TOKEN_CLAMP,
                "budget": budget,
                "days": days,
                "data": [_row(cell, shown) for cell in figures["requests"]],
            }

    def set_privacy_budget(
        self, caller: App, name: str, epsilon: float, key: str | None = None
    ) -> dict[str, Any]:
        """Grant the total epsilon budget `epsilon` to one API key of app `name` (`key`: its id or its
        hint, as `GET /os/apps/{name}` lists them), or to each of its keys and its in-process use
        (`key` None). Admins only; what a key has spent stays spent."""
        with self.trail.audited(caller, "stats.budget", name):
            if not caller.is_admin:
                raise PermissionDeniedError(
                    f"app {caller.name!r} may not set privacy budgets; it needs admin"
                )
            budget = check_epsilon(epsilon) if epsilon else 0.0
            keys = _chosen_keys(self.apps.key_ids(name), key, name)
            granted = [
                {"key": kid, "hint": hint, **self.privacy_budgets.set_budget(f"key:{kid}", budget)}
                for kid, hint in keys.items()
            ]
            if key is None:
                in_process = self.privacy_budgets.set_budget(self.apps.get(name).identity, budget)
                first = granted[0] if granted else in_process
            else:
                first = granted[0]
            return {
                "app": name,
                **{k: first[k] for k in ("total", "spent", "remaining")},
                "keys": granted,
            }


def analyst_id(caller: App, key_id: str | None) -> str:
    """Whose budget a release is charged to: the API key's (`key:<id>`), else the app's."""
    return f"key:{key_id}" if key_id else caller.identity


def _chosen_keys(keys: dict[str, str], wanted: str | None, name: str) -> dict[str, str]:
    if wanted is None:
        return keys
    wanted = wanted.rstrip("…")
    chosen = {kid: hint for kid, hint in keys.items() if wanted in (kid, hint.rstrip("…"))}
    if len(chosen) != 1:
        listed = ", ".join(f"{kid} ({hint})" for kid, hint in keys.items()) or "none"
        raise InvalidRequestError(
            f"app {name!r} has {'no' if not chosen else 'more than one'} key {wanted!r}; name one of its "
            f"keys by id or hint: {listed}"
        )
    return chosen


def _row(cell: Cell, figures: dict[str, dict[Cell, int]]) -> dict[str, Any]:
    return {"app": cell.app, "day": cell.day, **{m: values[cell] for m, values in figures.items()}}
