"""Routing: a request in plain language (and maybe a file) to a service, a tool or a chain of them.

Each destination is scored by the cosine similarity of the request's sentence embedding to its
description and example requests (the best match counts). A clear winner takes the request; when
the top two are within `margin`, the language model decides between the closest few (if the
router was given a decider), since embeddings alone confuse near neighbours such as `qa` and
`summarize`. A file decides the first step by its kind (an image is read by `ocr`, audio by
`transcribe`); when the words then ask for more than its text (a summary, a translation), the
route chains the language service after it. Every route carries its scores and reasons, so a
caller can show why it went where it went.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from llmasos.errors import InvalidRequestError, LLMasOSError
from llmasos.programs import default_registry
from llmasos.router.arguments import arguments_for, instruction, text_arguments
from llmasos.router.catalog import Destination, destinations

#: The first step for each kind of attached file.
PERCEPTION = {"image": "ocr", "audio": "transcribe"}
#: Language services that can follow a perception step on its text.
FOLLOW_UPS = ("summarize", "translate", "qa", "classify", "extract")
#: Within this much similarity of the best, a destination is a close call for the model to settle.
CLOSE_CALL_MARGIN = 0.08
CANDIDATES_FOR_MODEL = 3

Embed = Callable[[list[str]], list[list[float]]]
Decide = Callable[[str, list[Destination]], str]  # (request, candidates) -> a candidate's name
Allows = Callable[[str, str], bool]  # (kind, name) -> whether the calling app may use it


@dataclass(frozen=True)
class Step:
    kind: str  # "service" or "tool"
    name: str
    input: object = None  # a service's input, or a tool's arguments
    params: dict = field(default_factory=dict)  # a service's params


@dataclass
class Route:
    request: str
    target: str  # a destination, or a chain "ocr>summarize"
    steps: list[Step]
    scores: dict[str, float]  # every destination's similarity to the request, best first
    reasons: list[str]
    decided_by: str  # "attachment", "embedding" or "model"

    def to_dict(self) -> dict:
        return asdict(self)


def _normalize(v: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


class IntentRouter:
    def __init__(
        self,
        embed: Embed,
        *,
        catalog: list[Destination] | None = None,
        decide: Decide | None = None,
        margin: float = CLOSE_CALL_MARGIN,
    ) -> None:
        self._embed = embed
        self._decide = decide
        self.margin = margin
        # Without a fixed catalog the router follows the program registry: plugins loaded again
        # (after a `pip install`) become destinations at the next request.
        self._registry = None if catalog is not None else default_registry()
        self._lock = threading.Lock()
        self._learn(catalog if catalog is not None else destinations(self._registry))

    def _learn(self, catalog: list[Destination]) -> None:
        texts = [t for d in catalog for t in d.texts]
        vectors = iter(_normalize(v) for v in self._embed(texts))
        self._vectors = {d.name: [next(vectors) for _ in d.texts] for d in catalog}
        self.catalog = catalog
        self.by_name = {d.name: d for d in catalog}

    def _follow_registry(self) -> None:
        with self._lock:
            registry = default_registry()
            if self._registry is not None and registry is not self._registry:
                self._learn(destinations(registry))
                self._registry = registry

    def scores(self, request: str) -> dict[str, float]:
        """Each destination's similarity to `request`, best first."""
        self._follow_registry()
        (query,) = [_normalize(v) for v in self._embed([request])]
        scored = {
            name: max(sum(a * b for a, b in zip(query, v, strict=True)) for v in vectors)
            for name, vectors in self._vectors.items()
        }
        return dict(sorted(scored.items(), key=lambda kv: -kv[1]))

    def route(
        self,
        request: str,
        attachment: str | None = None,
        *,
        decide: Decide | None = None,
        allows: Allows | None = None,
    ) -> Route:
        """Where `request` goes; `attachment` is the kind of a file sent with it ("image", "audio").
        `decide` (else the router's own) settles close calls, between destinations that `allows`
        (the calling app's capabilities) permits only: a model is never offered what the app may not
        use. The route depends on the request's words and the file's kind, never on the file's
        contents, so text read from an image or a recording cannot choose what runs."""
        decide = decide or self._decide
        if not isinstance(request, str) or not request.strip():
            raise InvalidRequestError("the request is empty; say what you want done")
        if attachment is not None and attachment not in PERCEPTION:
            raise InvalidRequestError(
                f"attachment kind {attachment!r} is not handled; use one of {', '.join(PERCEPTION)}"
            )
        # Score the instruction, not the text it carries: "Summarize this: <an article about parks>"
        # is about summarizing, whatever the article says.
        scores = self.scores(instruction(request))
        rounded = {k: round(v, 4) for k, v in scores.items()}
        if attachment is not None:
            return self._route_file(request, attachment, scores, rounded)
        # Reading an image or a recording needs one: without a file those tools cannot be the answer.
        ranked = [name for name in scores if name not in PERCEPTION.values()]
        best, reasons, decided_by = ranked[0], [], "embedding"
        close = [n for n in ranked[1:CANDIDATES_FOR_MODEL] if scores[best] - scores[n] < self.margin]
        if allows is not None:
            close = [n for n in close if allows(self.by_name[n].kind, n)]
        reasons.append(f"closest to {best!r} (similarity {scores[best]:.3f})")
        if close and decide is not None:
            candidates = [self.by_name[n] for n in (best, *close)]
            if allows is not None:
                candidates = [d for d in candidates if allows(d.kind, d.name)]
            try:
                choice = decide(request, candidates)
            except LLMasOSError as err:  # e.g. the model's window is too small: keep the embedding's pick
                choice = None
                reasons.append(f"the model could not decide ({err}); kept the closest")
            if choice in {d.name for d in candidates}:
                names = ", ".join(repr(n) for n in close)
                reasons.append(f"{names} within {self.margin} of it: the model chose {choice!r}")
                best, decided_by = choice, "model"
        elif close:
            reasons.append(f"{', '.join(repr(n) for n in close)} close behind; no model to decide")
        dest = self.by_name[best]
        step_input, params = arguments_for(dest.name, request)
        if dest.kind == "tool" and isinstance(step_input, str):  # a tool the rules do not know
            step_input = text_arguments(dest.input_schema, step_input)
        return Route(request, best, [Step(dest.kind, best, step_input, params)], rounded, reasons, decided_by)

    def _route_file(self, request: str, kind: str, scores: dict[str, float], rounded: dict) -> Route:
        first = PERCEPTION[kind]
        reasons = [f"an {kind} file came with the request: {first!r} turns it into text"]
        steps = [Step("tool", first, None)]
        follow = max(FOLLOW_UPS, key=lambda n: scores.get(n, -1.0))
        if scores.get(follow, -1.0) > scores.get(first, -1.0):
            reasons.append(
                f"the words ask for {follow!r} (similarity {scores[follow]:.3f} > {first!r} "
                f"{scores[first]:.3f}), so it runs on that text"
            )
            _, params = arguments_for(follow, request)
            steps.append(Step("service", follow, None, params))
            target = f"{first}>{follow}"
        else:
            reasons.append(f"the words ask for the text itself ({first!r} {scores[first]:.3f})")
            target = first
        return Route(request, target, steps, rounded, reasons, "attachment")
