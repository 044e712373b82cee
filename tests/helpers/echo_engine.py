"""An engine that answers with its own input: it records every prompt it is given (the engine
boundary: what a model would see) and generates that prompt's text back, a few characters per
token, so placeholders in it come out cut across deltas. For privacy tests that must see what
reaches the model and what the app receives."""

from __future__ import annotations

from llmasos.engine.protocol import RequestOutput
from llmasos.engine.sampling import SamplingParams
from tests.helpers.fake_engine import FakeEngine


class EchoTokenizer:
    """One token per character, and back: the tests can read what the engine was given."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def encode_chat(self, messages: list[dict], *, tools: list[dict] | None = None) -> list[int]:
        return self.encode("".join(f"{m['role']}: {m.get('content') or ''}\n" for m in messages))

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


class EchoEngine(FakeEngine):
    def __init__(self, chars_per_token: int = 3) -> None:
        super().__init__(context_length=1 << 20)
        self.tokenizer = EchoTokenizer()
        self.chars_per_token = chars_per_token
        self.prompts: list[str] = []  # every prompt as the engine got it, decoded
        self._echo: dict[str, str] = {}

    def add(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        cache_namespace: str = "default",
    ) -> None:
        text = prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt)
        self.prompts.append(text)
        self._echo[request_id] = text
        super().add(request_id, prompt, params, cache_namespace=cache_namespace)

    def _sample(self, request_id: str) -> RequestOutput:
        request = self.requests[request_id]
        text = self._echo[request_id]
        start = len(request.out) * self.chars_per_token
        piece = text[start : start + self.chars_per_token]
        request.out.append(ord(piece[0]) if piece else 0)
        finished = start + self.chars_per_token >= len(text) or len(request.out) >= request.max_tokens
        if finished:
            self._remove(request_id)
            del self._echo[request_id]
        reason = "stop" if finished else None
        return RequestOutput(request_id, [request.out[-1]], piece, finished, reason, 0, len(request.out))
