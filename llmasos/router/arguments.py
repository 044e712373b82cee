"""What to pass to the destination a request was routed to, read from the request's words.

Plain parsing, no model: the text to work on (after a colon, or in quotes), a target language,
labels ("positive or negative"), fields to extract, an arithmetic expression, a time zone, a fact.
Where the words do not say, a service's defaults apply.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_QUOTED = re.compile(r"[\"“']([^\"”']{2,})[\"”']")
_LANGUAGE = re.compile(r"\b(?:to|into|in)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)\b")
_LABEL = r"[\w-]+(?: [\w-]+)?"  # one or two words
_LABELS = re.compile(
    rf"\b(?:as|is (?:this|it)|fits this [a-z]+ best,?|into)\s+((?:{_LABEL},\s*)*{_LABEL}\s+or\s+{_LABEL})\b",
    re.IGNORECASE,
)
_FIELDS = re.compile(
    r"\b(?:extract|pull out|get|find)\s+(?:the\s+)?(?:fields?\s+)?(.+?)\s+(?:from|out of|as)\b", re.IGNORECASE
)
_ARITHMETIC_WORDS = [
    (r"\bto the power of\b", "**"),
    (r"\bsquared\b", "** 2"),
    (r"\btimes\b|\bmultiplied by\b", "*"),
    (r"\bdivided by\b", "/"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\bpercent\b", "%"),
]


def instruction(request: str) -> str:
    """The words that say what to do, without the text they carry: before a colon, quotes elided.

    "Classify this email as spam or not: 'You won a cruise'" -> "Classify this email as spam or not".
    """
    head, sep, tail = request.partition(":")
    words = head.split()
    if sep and tail.strip() and len(words) >= 2 and len(head) < 120:
        request = head
    elided = _QUOTED.sub("this", request).strip()
    return elided or request.strip()


def after_colon_or_quotes(request: str) -> str:
    """The text a request is about: after its first colon, else in quotes, else all of it."""
    head, sep, tail = request.partition(":")
    if sep and tail.strip() and len(head) < 120:
        tail = tail.strip()
        quoted = len(tail) > 2 and tail[0] in "\"'“" and tail[-1] in "\"'”"
        return tail[1:-1].strip() if quoted else tail
    quoted = _QUOTED.search(request)
    return quoted.group(1).strip() if quoted else request.strip()


def _language(request: str) -> str | None:
    match = _LANGUAGE.search(request)
    return match.group(1) if match else None


def _labels(request: str) -> list[str] | None:
    match = _LABELS.search(request.split(":")[0])
    if not match:
        return None
    parts = [p.strip() for p in re.split(r",\s*|\s+or\s+", match.group(1)) if p.strip()]
    # "is this review positive or negative": the first label is no longer than the last one.
    width = len(parts[-1].split())
    parts[0] = " ".join(parts[0].split()[-width:])
    return parts or None


def _fields(request: str) -> list[str] | None:
    match = _FIELDS.search(request.split(":")[0])
    if not match:
        return None
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", match.group(1))
    names = [re.sub(r"^(?:the|a|an|its)\s+", "", p.strip().lower()) for p in parts]
    return [re.sub(r"\W+", "_", n).strip("_") for n in names if n] or None


def expression(request: str) -> str:
    """The arithmetic in a question: words to operators, the question's own words dropped."""
    text = request.strip().rstrip("?.! ")
    text = re.sub(
        r"^(?:what(?:'s| is)|how much is|compute|calculate|work out|evaluate)\s+", "", text, flags=re.I
    )
    for pattern, op in _ARITHMETIC_WORDS:
        text = re.sub(pattern, op, text, flags=re.IGNORECASE)
    return text.strip()


@lru_cache(maxsize=1)
def _zones() -> dict[str, str]:
    from zoneinfo import available_timezones

    return {zone.rsplit("/", 1)[-1].replace("_", " ").lower(): zone for zone in available_timezones()}


def timezone(request: str) -> str | None:
    """An IANA zone for a city named after "in" ("in Tokyo" -> Asia/Tokyo), if there is one."""
    for match in re.finditer(r"\bin\s+([A-Z][\w]+(?:\s+[A-Z][\w]+)?)", request):
        zone = _zones().get(match.group(1).lower())
        if zone:
            return zone
    return None


def fact(request: str) -> dict[str, str] | None:
    """(subject, relation, object) of "Remember that Alice works at Acme", if it reads like a fact."""
    match = re.search(r"\b(?:remember|note|know)\s+that\s+(.+?)[.!]?$", request, flags=re.IGNORECASE)
    if not match:
        return None
    words = match.group(1).split()
    for i, word in enumerate(words[1:], start=1):
        if word.islower():  # the first lower-case word after the subject starts the relation
            rel_end = i + 1
            while (
                rel_end < len(words)
                and words[rel_end].islower()
                and words[rel_end]
                in (
                    "at",
                    "in",
                    "for",
                    "with",
                    "to",
                    "of",
                    "on",
                    "from",
                    "by",
                    "is",
                    "a",
                    "an",
                    "the",
                )
            ):
                rel_end += 1
            return {
                "subject": " ".join(words[:i]),
                "relation": " ".join(words[i:rel_end]),
                "object": " ".join(words[rel_end:]) or words[-1],
            }
    return None


def entity(request: str) -> str | None:
    """The first capitalized word that does not start the sentence: the entity asked about."""
    words = re.findall(r"[A-Za-z][\w'-]*", request)
    for word in words[1:]:
        if word[0].isupper() and word.lower() not in ("i", "i'm"):
            return word
    return None


def arguments_for(name: str, request: str) -> tuple[Any, dict]:
    """(input or tool arguments, service params) for destination `name`."""
    text = after_colon_or_quotes(request)
    if name == "translate":
        return text, {"target": _language(request) or "English"}
    if name == "classify":
        return text, {"labels": _labels(request) or ["positive", "negative", "neutral"]}
    if name == "extract":
        fields = _fields(request) or ["value"]
        schema = {
            "type": "object",
            "properties": {f: {"type": "string"} for f in fields},
            "required": fields,
        }
        return text, {"schema": schema}
    if name == "qa":
        question = re.search(r"question:\s*(.+?)(?:\s+text:|$)", request, flags=re.IGNORECASE | re.DOTALL)
        context = re.search(
            r"(?:text|passage|context):\s*(.+?)(?:\s+question:|$)", request, flags=re.I | re.S
        )
        if question and context:
            return {"question": question.group(1).strip(), "context": context.group(1).strip()}, {}
        head, _, tail = request.partition(":")
        sentences = re.split(r"(?<=[.!])\s+", tail.strip())
        asked = [s for s in sentences if s.endswith("?")]
        context_text = " ".join(s for s in sentences if not s.endswith("?")) or tail.strip()
        return {"question": asked[-1] if asked else head.strip(), "context": context_text or request}, {}
    if name == "code":
        task = "explain" if re.search(r"\b(explain|what does)\b", request, flags=re.I) else "write"
        return (text if task == "explain" else request.strip()), {"task": task}
    if name in ("summarize", "chat"):
        return (text if name == "summarize" else request.strip()), {}
    if name == "calculator":
        return {"expression": expression(request)}, {}
    if name == "clock":
        zone = timezone(request)
        return ({"timezone": zone} if zone else {}), {}
    if name == "knowledge":
        triple = fact(request)
        if triple:
            return {"operation": "add", **triple}, {}
        found = entity(request)
        return {"operation": "query", **({"entity": found} if found else {})}, {}
    if name in ("speak", "embed"):
        return ({"text": text} if name == "speak" else {"texts": [text]}), {}
    return text, {}


def text_arguments(schema: dict, text: str) -> dict:
    """A tool's arguments from the text a request carries, for a tool these rules do not know (a
    plugin's): the text goes to its one required string argument (else its one string argument)."""
    properties = schema.get("properties") or {}
    strings = [k for k, s in properties.items() if isinstance(s, dict) and s.get("type") == "string"]
    required = [k for k in strings if k in schema.get("required", ())]
    for names in (required, strings):
        if len(names) == 1:
            return {names[0]: text}
    return {}
