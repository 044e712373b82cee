"""What one generation run recorded (a Trace), and the rates derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Trace:
    """Timestamps of one batched generation: its start, each sequence's first token, every step."""

    start: float
    first: dict[int, float] = field(default_factory=dict)  # sequence index -> time of its first token
    steps: list[tuple[float, int]] = field(default_factory=list)  # (time, new tokens in that step)
    tokens: dict[int, list[int]] = field(default_factory=dict)  # sequence index -> output ids

    def record(self, now: float, produced: dict[int, int]) -> None:
        for index, token in produced.items():
            self.first.setdefault(index, now)
            self.tokens.setdefault(index, []).append(token)
        self.steps.append((now, len(produced)))

    @property
    def ttft(self) -> float:
        """Seconds from the start to the first token of the first sequence."""
        return min(self.first.values()) - self.start

    @property
    def decode_rate(self) -> float:
        """Tokens/s of the decode phase: tokens made after every sequence had its first token, over
        the time they took. Engines that overlap one sequence's prefill with another's decode are
        neither helped nor hurt: only steps after the last first token count."""
        begin = max(self.first.values())
        produced = sum(n for t, n in self.steps if t > begin)
        return produced / (self.steps[-1][0] - begin)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading greedy tokens two engines agree on (a sanity check, not a score)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
