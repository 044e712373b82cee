"""A scripted engine that obeys injected instructions, for the containment tests.

It is the worst model an app could be given: whatever text reaches its prompt, from a document, a
tool's result or an OCR'd image, it follows. An instruction is the text after `OBEY:` up to the end
of its line; the engine answers with the last such instruction in its prompt (or "ok" when there is
none) in one step. Every prompt it is given is kept (`prompts`, as text), so a test can check what
reached the model's boundary.
"""

from __future__ import annotations

import re

from llmasos.engine.protocol import RequestOutput
from llmasos.engine.sampling import SamplingParams
from tests.helpers.fake_engine import FakeEngine

INSTRUCTION = re.compile(r"OBEY:\s*([^\n]*)")


class TextTokenizer:
    """One token a character (its code point + 3), so what the engine sees decodes back exactly."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) + 3 for c in text]

    def encode_chat(self, messages: list[dict], *, tools: list[dict] | None = None) -> list[int]:
        names = ",".join(t["function"]["name"] for t in tools or ())
        text = f"[tools: {names}]\n" + "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in messages)
        return self.encode(text)

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 3) for i in ids)


class ObedientEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = TextTokenizer()
        self.prompts: list[str] = []
        self._answers: dict[str, str] = {}

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
        found = INSTRUCTION.findall(text)
        self._answers[request_id] = found[-1].strip() if found else "ok"
        super().add(request_id, prompt, params, cache_namespace=cache_namespace)

    def _sample(self, request_id: str) -> RequestOutput:
        answer = self._answers.pop(request_id)
        self._remove(request_id)
        ids = self.tokenizer.encode(answer)
        return RequestOutput(request_id, ids, answer, True, "stop", 0, len(ids))
