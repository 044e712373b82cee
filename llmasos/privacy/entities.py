"""The entity types LLMasOS detects, and one detected span.

The names are those of presidio-research's synthetic data set (the development data of
`benchmarks/pii_detection.py`); Presidio's and spaCy's own labels map onto them in `detector.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTITY_TYPES = (
    "PERSON",
    "STREET_ADDRESS",
    "GPE",  # a country, city or region
    "ORGANIZATION",
    "CREDIT_CARD",
    "DATE_TIME",
    "TITLE",  # an honorific (Mr., Dr.) or a job title
    "PHONE_NUMBER",
    "AGE",
    "NRP",  # a nationality, religious or political group
    "EMAIL_ADDRESS",
    "ZIP_CODE",
    "DOMAIN_NAME",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "US_DRIVER_LICENSE",
)


@dataclass(frozen=True)
class Detection:
    """One span of personal data: `text[start:end]` is a value of `entity_type`."""

    entity_type: str
    start: int
    end: int
    score: float

    @property
    def length(self) -> int:
        return self.end - self.start

    def overlaps(self, other: Detection) -> bool:
        return self.start < other.end and other.start < self.end
