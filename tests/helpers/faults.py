"""Injected engine faults: which requests fail, at which stage, decided by a seeded random generator.

A poisoned request fails every time it reaches its stage (as a seed that torch cannot take does), so
the kernel must find it and fail its process alone. A transient fault fails one step once, whoever is
in it, and must fail no one. `hook(stage, request_ids)` is what the fake engine calls at each stage;
`install_on_llm_engine` puts the same checks into a real `LLMEngine`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

STAGES = ("add", "prepare", "sample", "suspend", "resume")


class InjectedFault(RuntimeError):
    """Not an LLMasOSError: the kernel must treat it as the engine's own bug would be treated."""


class FaultInjector:
    def __init__(self, seed: int, stages: tuple[str, ...] = STAGES) -> None:
        self.rng = random.Random(seed)
        self.stages = stages
        self.poisoned: dict[str, str] = {}  # request id -> the stage where it fails
        self.transient_pending = False
        self.raised: list[tuple[str, str]] = []  # (stage, request id or "transient"), in order

    def poison(self, request_id: str, stage: str | None = None) -> str:
        """Make `request_id` fail at `stage` (a random one if None) from now on."""
        self.poisoned[request_id] = stage or self.rng.choice(self.stages)
        return self.poisoned[request_id]

    def fail_next_step_once(self) -> None:
        self.transient_pending = True

    def hook(self, stage: str, request_ids: list[str]) -> None:
        if stage == "prepare" and self.transient_pending and request_ids:
            self.transient_pending = False
            self.raised.append((stage, "transient"))
            raise InjectedFault("injected transient fault in a step")
        for request_id in request_ids:
            if self.poisoned.get(request_id) == stage:
                self.raised.append((stage, request_id))
                raise InjectedFault(f"injected fault in {stage} of request {request_id}")


def install_on_llm_engine(engine, hook: Callable[[str, list[str]], None]) -> None:  # engine: LLMEngine
    """Call `hook` where the real engine prepares (add; a step's inputs), samples (after the forward
    pass wrote the KV, before any token is committed), suspends and resumes."""
    runner = engine.runner
    prepare, sampler = runner._prepare, runner.sampler
    batch_ids: list[str] = []

    def checked_prepare(batch):
        batch_ids[:] = [item.seq.seq_id for item in batch if item.samples]
        hook("prepare", [item.seq.seq_id for item in batch])
        return prepare(batch)

    def checked_sampler(*args, **kwargs):
        tokens = sampler(*args, **kwargs)  # the draws happen (and seeded generators move) first
        hook("sample", list(batch_ids))
        return tokens

    runner._prepare, runner.sampler = checked_prepare, checked_sampler
    for stage in ("add", "suspend", "resume"):
        method = getattr(engine, stage)

        def checked(request_id, *args, _method=method, _stage=stage, **kwargs):
            hook(_stage, [request_id])
            return _method(request_id, *args, **kwargs)

        setattr(engine, stage, checked)
