"""Usage statistics per app and day (requests, tokens, service calls), released with differential
privacy through OpenDP, and each analyst's privacy budget.

What is protected: one request (event-level privacy). A request adds 1 to one cell's request count,
at most `TOKEN_CLAMP` tokens to its token sum (larger requests are clamped before summing), and a
service call adds 1 to one cell's service count; so the three vectors have L1 sensitivity 1,
TOKEN_CLAMP and 1. Each release splits its epsilon evenly over the three and adds discrete Laplace
noise (OpenDP's `make_laplace` on integer vectors) with the scale OpenDP's privacy map confirms.
Which cells are released is public (the registered apps x the days asked for), never taken from the
data, so an app's activity is not revealed by its row being present. Released figures are clamped
at zero (post-processing costs no privacy).

Budgets: each analyst API key (`key:<key id>`; an in-process caller, who has no key, by its app's
identity) may spend `DEFAULT_BUDGET` epsilon in all unless an admin grants it another (0 refuses it
every release). Only admins issue keys, so a new key is a budget an admin chose to give. A release
that would pass a budget is refused before anything is computed, and the spend is committed before
the figures are (a failed release is charged, never a free retry). Exact figures are for admins only.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import opendp.prelude as dp

from llmasos.config import llmasos_home
from llmasos.errors import InvalidRequestError, PrivacyBudgetError
from llmasos.storage.db import Database

dp.enable_features("contrib")  # OpenDP's measurements are behind this flag until they are vetted

TOKEN_CLAMP = 4096  # tokens one request may add to a sum: SmolLM2's whole 8k context is rarely used
DEFAULT_BUDGET = 3.0  # epsilon an analyst may spend in all: three releases at the default epsilon
DEFAULT_EPSILON = 1.0
MAX_DAYS = 92
MEASURES = ("requests", "tokens", "services")
SENSITIVITY = {"requests": 1, "tokens": TOKEN_CLAMP, "services": 1}


@dataclass(frozen=True)
class Cell:
    app: str
    day: str  # YYYY-MM-DD, UTC


def day_range(since: str | None, until: str | None) -> list[str]:
    """The days asked for, oldest first (default: the last 7 days up to today, UTC)."""
    try:
        last = dt.date.fromisoformat(until) if until else dt.datetime.now(dt.UTC).date()
        first = dt.date.fromisoformat(since) if since else last - dt.timedelta(days=6)
    except ValueError:
        raise InvalidRequestError("since and until are days written YYYY-MM-DD") from None
    count = (last - first).days + 1
    if not 1 <= count <= MAX_DAYS:
        raise InvalidRequestError(f"ask for 1 to {MAX_DAYS} days, with since on or before until")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(count)]


def exact_figures(audit_db: Database, apps: list[str], days: list[str]) -> dict[str, dict[Cell, int]]:
    """{measure: {cell: exact value}} from the audit log, for every cell (zero where nothing ran)."""
    cells = {Cell(a, d): 0 for a in apps for d in days}
    figures = {m: dict(cells) for m in MEASURES}
    start = dt.datetime.fromisoformat(days[0]).replace(tzinfo=dt.UTC).timestamp()
    end = start + 86400 * len(days)
    rows = audit_db.execute(
        "SELECT app, date(ts, 'unixepoch') AS day, "
        "SUM(opens IS NOT NULL) AS requests, "
        "SUM(CASE WHEN opens IS NOT NULL THEN MIN(tokens_in + tokens_out, ?) ELSE 0 END) AS tokens, "
        "SUM(call LIKE 'service.%') AS services "
        "FROM audit WHERE ts >= ? AND ts < ? GROUP BY app, day",
        (TOKEN_CLAMP, start, end),
    )
    for row in rows:
        cell = Cell(row["app"], row["day"])
        if cell in cells:
            for measure in MEASURES:
                figures[measure][cell] = int(row[measure] or 0)
    return figures


def release(figures: dict[str, dict[Cell, int]], epsilon: float) -> dict[str, dict[Cell, int]]:
    """The figures with discrete Laplace noise, epsilon split evenly over the measures."""
    share = epsilon / len(MEASURES)
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    out = {}
    for measure, values in figures.items():
        sensitivity = SENSITIVITY[measure]
        # Laplace's scale for `share` is sensitivity/share; a hair more absorbs float rounding, and
        # OpenDP's own privacy map checks the result.
        laplace = dp.m.make_laplace(*space, scale=sensitivity / share * (1 + 1e-9))
        if laplace.map(sensitivity) > share:
            raise AssertionError(f"the {measure} release would spend more than epsilon {share}")
        noisy = laplace(list(values.values()))
        out[measure] = {cell: max(0, int(v)) for cell, v in zip(values, noisy, strict=True)}
    return out


def _budget_table(conn) -> None:
    conn.execute(
        """CREATE TABLE budgets (
            analyst TEXT PRIMARY KEY,      -- App.identity
            budget REAL NOT NULL,          -- epsilon it may spend in all
            spent REAL NOT NULL,
            releases INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )


class PrivacyBudgets:
    """Each analyst's epsilon budget, in `$LLMASOS_HOME/stats.db`."""

    def __init__(self, path: Path | None = None) -> None:
        self.db = Database(path or llmasos_home() / "stats.db", [_budget_table])

    def spend(self, analyst: str, epsilon: float) -> dict:
        """Charge `epsilon` to `analyst`, or refuse with PrivacyBudgetError if it would pass the budget."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT budget, spent, releases FROM budgets WHERE analyst = ?", (analyst,)
            ).fetchone()
            budget, spent, releases = (
                (row["budget"], row["spent"], row["releases"]) if row else (DEFAULT_BUDGET, 0.0, 0)
            )
            if spent + epsilon > budget + 1e-12:
                raise PrivacyBudgetError(
                    f"this release needs epsilon {epsilon:g} but only {max(0.0, budget - spent):g} of your "
                    f"budget of {budget:g} is left; ask an admin to raise it, or ask for a smaller epsilon"
                )
            conn.execute(
                "INSERT INTO budgets VALUES (?, ?, ?, ?, ?) ON CONFLICT(analyst) DO UPDATE SET "
                "spent = excluded.spent, releases = excluded.releases, updated_at = excluded.updated_at",
                (analyst, budget, spent + epsilon, releases + 1, time.time()),
            )
        return {"total": budget, "spent": spent + epsilon, "remaining": budget - spent - epsilon}

    def set_budget(self, analyst: str, budget: float) -> dict:
        if not budget >= 0:
            raise InvalidRequestError("a privacy budget is an epsilon >= 0")
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO budgets VALUES (?, ?, 0, 0, ?) ON CONFLICT(analyst) DO UPDATE SET "
                "budget = excluded.budget, updated_at = excluded.updated_at",
                (analyst, budget, time.time()),
            )
        return self.status(analyst)

    def status(self, analyst: str) -> dict:
        rows = self.db.execute("SELECT budget, spent FROM budgets WHERE analyst = ?", (analyst,))
        budget, spent = (rows[0]["budget"], rows[0]["spent"]) if rows else (DEFAULT_BUDGET, 0.0)
        return {"total": budget, "spent": spent, "remaining": max(0.0, budget - spent)}


#: The smallest epsilon a release or a budget may name. Below it the noise drowns every figure, and a
#: tiny one overflowed the noise scale (sensitivity / epsilon) to infinity: schemathesis's
#: `epsilon=2.2250738585e-313` was a 500.
MIN_EPSILON = 0.001
#: The largest: beyond it the noise no longer protects anyone.
MAX_EPSILON = 10.0


def check_epsilon(epsilon: object) -> float:
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, int | float)
        or not MIN_EPSILON <= epsilon <= MAX_EPSILON
    ):
        raise InvalidRequestError(
            f"epsilon must be a number from {MIN_EPSILON:g} to {MAX_EPSILON:g} (1 is a common choice)"
        )
    return float(epsilon)
