"""`for_each`: one step run once per item of a list, at most `concurrency` items at once.

Each item's result is committed on its own (item = its index), so a crash in the middle of a fan-out
re-runs only the items without a result; the step's own result (the list of outputs, in the items'
order) is committed when every item has one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmasos.workflows import templates
from llmasos.workflows.spec import Step
from llmasos.workflows.steps import with_item
from llmasos.workflows.store import WHOLE, RunStore, StepRecord

#: (live run, step id, step, item, context) -> the item's committed record (None: the server stops).
Attempts = Callable[[Any, str, Step, int, dict], StepRecord | None]


def run_for_each(
    attempts: Attempts, store: RunStore, live: Any, step_id: str, step: Step, context: dict
) -> None:
    """Run every item of the step's `for_each` and commit the step's result."""
    fan_out = step.for_each
    try:
        items = templates.render(fan_out.items, context)
    except Exception as err:
        store.commit(live.id, step_id, WHOLE, "failed", error=f"for_each.items could not be rendered: {err}")
        return
    if not isinstance(items, list):
        store.commit(
            live.id,
            step_id,
            WHOLE,
            "failed",
            error=f"for_each.items rendered to {type(items).__name__}, not a list",
        )
        return
    if len(items) > fan_out.max_items:
        store.commit(
            live.id,
            step_id,
            WHOLE,
            "failed",
            error=f"for_each has {len(items)} items, more than its max_items of {fan_out.max_items}",
        )
        return
    with ThreadPoolExecutor(fan_out.concurrency, thread_name_prefix=f"for-each-{step_id}") as pool:
        records = list(
            pool.map(
                lambda index: attempts(live, step_id, step, index, with_item(context, items[index], index)),
                range(len(items)),
            )
        )
    if any(record is None for record in records):
        return  # the server is stopping; the items without a result run again on start
    failed = [r for r in records if r.status != "succeeded"]
    if failed:
        first = failed[0]
        error = f"{len(failed)} of {len(items)} items failed; item {first.item}: {first.error}"
        store.commit(
            live.id, step_id, WHOLE, "failed", error=error, attempts=max(r.attempts for r in records)
        )
        return
    store.commit(live.id, step_id, WHOLE, "succeeded", output=[r.output for r in records], attempts=1)
