"""`/os/stats`'s system call: exact figures per app and day for admins only, differentially private
figures for analysts (close to the truth where counts are large), and each analyst's epsilon budget
refused once spent."""

from __future__ import annotations

import datetime as dt
import statistics

import pytest

from llmasos.errors import PermissionDeniedError, PrivacyBudgetError
from llmasos.kernel.private_stats import TOKEN_CLAMP
from llmasos.security.admin import ensure_admin
from llmasos.security.apps import App
from llmasos.security.audit import AuditRecord
from tests.helpers.programs import syscalls_without_models

DAY = "2026-03-02"
NOON = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def world():
    syscalls = syscalls_without_models()
    *_, analyst = (syscalls.apps.create(App(n)) for n in ("busy", "quiet", "analyst"))
    admin, _ = ensure_admin(syscalls.apps)
    rows = [AuditRecord("busy", "chat", "finished", tokens_in=10, tokens_out=5, opens=1, ts=NOON)] * 1200
    rows += [
        AuditRecord("busy", "chat", "finished", tokens_in=9000, tokens_out=0, opens=1, ts=NOON)
    ]  # clamped
    rows += [AuditRecord("busy", "service.summarize", "ok", ts=NOON)] * 3
    rows += [AuditRecord("quiet", "chat", "started", ts=NOON)]  # a start row is not a request
    rows += [AuditRecord("quiet", "chat", "finished", opens=1, ts=NOON + 86400)]  # the next day
    db = syscalls.audit.db
    with db.transaction() as conn:  # straight into the table: sealing 1,200 rows one by one is slow
        for r in rows:
            conn.execute(
                "INSERT INTO audit (ts, app, call, target, allowed, outcome, reason, pid, tokens_in, "
                "tokens_out, duration_s, interface, prompt, output, prev_hash, hash, opens) "
                "VALUES (?, ?, ?, '', 1, ?, '', NULL, ?, ?, 0, '', NULL, NULL, '', '', ?)",
                (r.ts, r.app, r.call, r.outcome, r.tokens_in, r.tokens_out, r.opens),
            )
    return syscalls, admin, analyst


def _by_app(result: dict, day: str = DAY) -> dict[str, dict]:
    return {row["app"]: row for row in result["data"] if row["day"] == day}


def test_exact_figures_are_for_admins_only(world) -> None:
    syscalls, admin, analyst = world
    exact = syscalls.usage_stats(admin, since=DAY, until="2026-03-03", exact=True)
    busy, quiet = _by_app(exact)["busy"], _by_app(exact)["quiet"]
    assert busy == {
        "app": "busy",
        "day": DAY,
        "requests": 1201,
        "tokens": 1200 * 15 + TOKEN_CLAMP,
        "services": 3,
    }
    assert quiet["requests"] == 0 and _by_app(exact, "2026-03-03")["quiet"]["requests"] == 1
    assert {r["app"] for r in exact["data"]} == {"busy", "quiet", "analyst", "admin"}  # every app, every day
    with pytest.raises(PermissionDeniedError, match="exact usage figures"):
        syscalls.usage_stats(analyst, since=DAY, until=DAY, exact=True)


def test_private_figures_are_noisy_but_close_at_epsilon_one(world) -> None:
    syscalls, admin, analyst = world
    syscalls.set_privacy_budget(admin, "analyst", 10)
    released = [_by_app(syscalls.usage_stats(analyst, since=DAY, until=DAY, epsilon=1.0)) for _ in range(10)]
    requests = [r["busy"]["requests"] for r in released]
    assert len(set(requests)) > 1  # noise was added (ten equal draws: probability below 1e-6)
    # Scale 3 per count at epsilon 1: an error of 120 (10%) has probability e^-40.
    assert statistics.median(abs(n - 1201) / 1201 for n in requests) < 0.1
    assert all(r["quiet"]["requests"] >= 0 for r in released)
    assert released and syscalls.privacy_budgets.status(analyst.identity)["spent"] == pytest.approx(10)


def test_the_budget_is_refused_once_spent(world) -> None:
    syscalls, _, analyst = world
    for _ in range(3):  # the default budget: three releases at epsilon 1
        result = syscalls.usage_stats(analyst, since=DAY, until=DAY, epsilon=1.0)
    assert result["budget"]["remaining"] == pytest.approx(0)
    with pytest.raises(
        PrivacyBudgetError, match=r"needs epsilon 0\.5 but only 0 of your budget of 3 is left"
    ):
        syscalls.usage_stats(analyst, since=DAY, until=DAY, epsilon=0.5)
