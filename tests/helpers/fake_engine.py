"""A scripted engine implementing the engine protocol (`llmasos.engine.protocol.Engine`), for kernel
tests that need no model.

Each step it computes prompts in chunks and one token per running request, in arrival order, up
to `max_num_seqs` requests: enough to make scheduling observable and fast.

`fault_hook(stage, request_ids)` is called where the real engine could fail for a request: "add",
"prepare" (a step's batch, before anything moves), "sample" (the requests that would get a token,
after the step's work is computed and before it is committed), "suspend" and "resume". A hook that
raises makes that call fail as the real engine's would: with nothing committed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from llmasos.engine.protocol import EngineStats, RequestOutput, StepOutput
from llmasos.engine.sampling import SamplingParams
from llmasos.engine.sequence import SuspendMode
from llmasos.engine.suspend import SuspendCost, SuspendReport, estimate_costs
from llmasos.errors import InvalidRequestError, RequestNotFoundError


class FakeTokenizer:
    def encode(self, text: str) -> list[int]:
        return [3 + ord(c) % 90 for c in text]

    def encode_chat(self, messages: list[dict], *, tools: list[dict] | None = None) -> list[int]:
        tools_text = "".join(t["function"]["name"] for t in tools or ())
        return self.encode(tools_text + "".join(m["content"] or "" for m in messages) + "\n")


@dataclass
class FakeRequest:
    prompt_left: int
    max_tokens: int
    out: list[int] = field(default_factory=list)
    suspended: bool = False


class FakeEngine:
    def __init__(self, max_num_seqs: int = 4, prefill_chunk: int = 64, context_length: int = 4096) -> None:
        self.max_num_seqs = max_num_seqs
        self.prefill_chunk = prefill_chunk
        self.context_length = context_length
        self.max_sequence_tokens = context_length
        self.memory_bytes = 1000
        self.tokenizer = FakeTokenizer()
        self.requests: dict[str, FakeRequest] = {}
        self.order: list[str] = []
        self.suspends: list[tuple[str, SuspendMode]] = []
        self.num_blocks = 100
        self.fault_hook: Callable[[str, list[str]], None] = lambda stage, request_ids: None

    @property
    def has_unfinished_requests(self) -> bool:
        return any(not r.suspended for r in self.requests.values())

    def add(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        cache_namespace: str = "default",
    ) -> None:
        params = params or SamplingParams()
        if request_id in self.requests:  # as the real engine refuses it
            raise InvalidRequestError(f"request id {request_id!r} is already live; use a new id")
        self.fault_hook("add", [request_id])
        self.requests[request_id] = FakeRequest(len(prompt), params.max_tokens)
        self.order.append(request_id)

    def step(self, request_ids: Collection[str] | None = None) -> StepOutput:
        runnable = [
            r
            for r in self.order
            if not self.requests[r].suspended and (request_ids is None or r in request_ids)
        ][: self.max_num_seqs]
        self.fault_hook("prepare", runnable)
        computed, sampled = {}, []
        for request_id in runnable:
            request = self.requests[request_id]
            chunk = min(request.prompt_left, self.prefill_chunk) if request.prompt_left else 1
            computed[request_id] = chunk
            if request.prompt_left <= chunk:  # the prompt's last chunk, or a decode step
                sampled.append(request_id)
        self.fault_hook("sample", sampled)
        for request_id, chunk in computed.items():
            request = self.requests[request_id]
            request.prompt_left = max(0, request.prompt_left - chunk)
        return StepOutput(tuple(self._sample(request_id) for request_id in sampled), computed)

    def _sample(self, request_id: str) -> RequestOutput:
        request = self.requests[request_id]
        token = 10 + len(request.out)
        request.out.append(token)
        finished = len(request.out) >= request.max_tokens
        if finished:
            self._remove(request_id)
        return RequestOutput(
            request_id, [token], f"t{token} ", finished, "length" if finished else None, 0, len(request.out)
        )

    def abort(self, request_id: str) -> None:
        if request_id not in self.requests:
            raise RequestNotFoundError(request_id)
        self._remove(request_id)

    def suspend(self, request_id: str, mode: SuspendMode | str = SuspendMode.SWAP) -> SuspendReport:
        self.fault_hook("suspend", [request_id])
        self.requests[request_id].suspended = True
        self.suspends.append((request_id, SuspendMode(mode)))
        return SuspendReport(request_id, SuspendMode(mode), 0, 0, 0, 0.0)

    def resume(self, request_id: str) -> SuspendReport:
        self.fault_hook("resume", [request_id])
        self.requests[request_id].suspended = False
        # Resumed work goes to the back, as a process that lost its slot would.
        self.order.remove(request_id)
        self.order.append(request_id)
        return SuspendReport(request_id, SuspendMode.SWAP, 0, 0, 0, 0.0)

    def suspend_costs(self, request_id: str) -> dict[SuspendMode, SuspendCost]:
        return estimate_costs(len(self.requests[request_id].out), 1, 1000, 16000, 5e9, 500.0)

    def stats(self) -> EngineStats:
        used = len(self.requests)
        return EngineStats(
            sum(not r.suspended for r in self.requests.values()),
            0,
            sum(r.suspended for r in self.requests.values()),
            self.num_blocks,
            self.num_blocks - used,
            0,
            16,
            0,
            0,
            0,
            500.0,
        )

    def _remove(self, request_id: str) -> None:
        del self.requests[request_id]
        self.order.remove(request_id)
