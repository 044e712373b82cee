"""Fault isolation: when the engine fails, find the one request it fails for and end that one alone.

An engine step that raises commits nothing (the protocol's rule), so a failed step can be retried on
a subset of its requests; a request that fails alone is the culprit. Failures while admitting,
suspending or resuming name their request already.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from llmasos.engine.protocol import Engine, StepOutput
from llmasos.errors import EngineFaultError, LLMasOSError, RequestNotFoundError

logger = logging.getLogger(__name__)


def step_apart(engine: Engine, request_ids: list[str], fail: Callable[[str, Exception], None]) -> StepOutput:
    """Step `request_ids` in groups, halving each group whose step raises, until every request either
    stepped or failed alone (then `fail(request_id, error)`). A request that always fails costs about
    2 log2(n) extra steps; a transient fault, one. Returns the successful steps as one."""
    steps: list[StepOutput] = []
    groups = [request_ids]
    while groups:
        group = groups.pop()
        try:
            steps.append(engine.step(group))
        except Exception as err:
            if len(group) == 1:
                fail(group[0], err)
            else:
                groups += [group[len(group) // 2 :], group[: len(group) // 2]]  # first half first
    computed = {rid: n for step in steps for rid, n in step.num_computed_tokens.items()}
    return StepOutput(tuple(out for step in steps for out in step.outputs), computed)


def engine_fault(err: Exception, stage: str) -> LLMasOSError:
    """The error a process's client sees when the engine failed on its request."""
    if isinstance(err, LLMasOSError):
        return err
    return EngineFaultError(
        f"the engine failed on this request while {STAGE_WORDS.get(stage, stage)} it "
        f"({type(err).__name__}: {err}); other requests were not affected. Retry it; if it fails "
        "again, report it with the server log"
    )


STAGE_WORDS = {"add": "admitting", "step": "running", "suspend": "suspending", "resume": "resuming"}


def abort_quietly(engine: Engine, request_id: str) -> None:
    """Drop a request from the engine if it is there; an engine that fails to is logged, not raised."""
    try:
        engine.abort(request_id)
    except RequestNotFoundError:
        pass
    except Exception:
        logger.exception("aborting request %s failed", request_id)
