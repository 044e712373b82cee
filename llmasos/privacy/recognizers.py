"""LLMasOS's own recognizers, for the types where Presidio's predefined ones and the spaCy model
are weak: street addresses, titles, ages and zip codes (which they do not detect at all), card
numbers of any issuer's length (Presidio's patterns miss 12-15 digit cards that pass the Luhn
check), local phone numbers announced by a context word, and names or places announced by one.

Each is a Presidio `EntityRecognizer`, so the analyzer runs them beside its own. A pattern's span is
its `value` group when it has one: the context words around it are evidence, not the entity.
Scores rank overlapping detections (`detector.resolve_overlaps`): a checksum beats a context word,
a context word beats a bare shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from presidio_analyzer import EntityRecognizer, RecognizerResult
from stdnum import luhn

# ---- the word lists (English; each is a closed class, not a list of examples) -------------------

STREET_TYPES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    "square|sq|parkway|pkwy|highway|hwy|circle|cir|crescent|close|row|alley|trail|loop|plaza|"
    "gardens|heights|mews|walk|grove|park|hill|ridge|view|path|pike|expressway|freeway"
)
#: Street words that come before the name in Romance, German and Slavic addresses.
STREET_PREFIXES = (
    "via|viale|vicolo|piazza|corso|largo|rue|chemin|avenue|boulevard|allée|impasse|calle|avenida|"
    "avda|paseo|plaza|carrer|camino|rua|travessa|praça|estrada|strada|ulica|ul\\.|ulitsa|trg|cesta"
)
#: Street words that end a compound street name (Hauptstraße, Kiannonkatu, Storgatan, Nørregade).
STREET_SUFFIXES = (
    "strasse|straße|str\\.|gasse|weg|allee|platz|ring|damm|ufer|katu|tie|kuja|gatan|vägen|gränd|"
    "vej|gade|veien|vegen|gata|laan|straat|plein|kade|gracht|utca|út|cesta|ulica"
)
UNIT_WORDS = r"apt\.?|apartment|suite|ste\.?|unit|flat|floor|fl\.?|room|box|psc|p\.?o\.? box"
HONORIFICS = r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev|Hon|Capt|Col|Sgt|Lt|Mme|Mlle|Herr|Frau"
#: Head nouns of job titles (the US Standard Occupational Classification's common ones).
OCCUPATIONS = (
    "manager|engineer|nurse|clerk|consultant|installer|administrator|teacher|developer|designer|"
    "analyst|assistant|director|officer|technician|specialist|accountant|lawyer|attorney|doctor|"
    "physician|surgeon|midwife|singer|driver|operator|supervisor|coordinator|representative|agent|"
    "scientist|programmer|architect|editor|writer|journalist|pharmacist|therapist|dentist|"
    "secretary|receptionist|cashier|salesperson|mechanic|electrician|plumber|carpenter|chef|cook|"
    "waiter|waitress|librarian|professor|lecturer|researcher|executive|president|founder|"
    "inspector|auditor|counselor|counsellor|advisor|adviser|planner|broker|banker|teller|worker|"
    "laborer|labourer|handler|assembler|machinist|welder|pilot|attendant|guard|firefighter|"
    "paramedic|photographer|artist|musician|actor|actress|dancer|producer|curator|veterinarian|"
    "nutritionist|dietitian|economist|statistician|translator|interpreter|tutor|coach|trainer|"
    "instructor|buyer|estimator|dispatcher|controller|examiner|adjuster|underwriter|appraiser|"
    "surveyor|drafter|repairer|tester|courier|housekeeper|janitor|custodian|gardener|landscaper|"
    "farmer|fisher|miner|ceo|cto|cfo|coo|vp|psychologist|psychiatrist|optometrist|paralegal|"
    "bookkeeper|auctioneer|baker|butcher|barber|hairdresser|cosmetologist|tailor|painter|"
    "sculptor|author|poet|composer|conductor|clergy|priest|pastor|rabbi|imam|soldier|sailor|"
    "captain|sheriff|detective|judge|mayor|senator|governor|ambassador|diplomat|scholar|student"
)
#: Words that begin a clause or are function words: never part of a job title before its head.
_NOT_TITLE_WORDS = (
    "a|an|the|as|to|for|and|or|of|in|at|on|by|with|i|my|our|your|his|her|their|is|was|am|are|be|"
    "been|work|works|worked|working|job|new|old|former|current|our|this|that|we|you|he|she|they|"
    "it|not|no|also|now|then|who|whom|which|senior's|so|but"
)
ADDRESS_WORDS = r"address|live at|lives at|located at|meet (?:me|us) at"
AGE_WORDS = r"aged|age|age of|turn|turns|turned|turning"
ZIP_WORDS = r"zip|zip code|zipcode|postal code|postcode|post code|plz|cep"
PHONE_WORDS = (
    r"phone|tel|telephone|mobile|cell|fax|call|calling|ring|text|whatsapp|"
    r"reach (?:me|us|him|her) at|answering at|number"
)
NAME_WORDS = (
    r"my name is|name is|name:|i'm|i am|this is|call me|dear|hi|hello|signed|regards|sincerely|contact"
)
_NAME = r"[A-ZÀ-ÖØ-Þ][\w'’À-ÿ-]+"
_PLACE = rf"{_NAME}(?:\s+(?:de|del|da|do|di|la|le|les|am|an|der|upon|on|sur|{_NAME})){{0,3}}"


class RegexRecognizer(EntityRecognizer):
    """One entity type found by regular expressions, each with its score; optionally validated.

    A pattern's `value` group, when present, is the entity's span (the rest is its context)."""

    def __init__(
        self,
        entity_type: str,
        patterns: Sequence[tuple[str, float]],
        *,
        flags: int = re.IGNORECASE,
        validate: Callable[[str], bool] | None = None,
        name: str | None = None,
    ) -> None:
        self.patterns = [(re.compile(p, flags), score) for p, score in patterns]
        self.validate = validate
        super().__init__(supported_entities=[entity_type], name=name or f"llmasos-{entity_type.lower()}")

    def load(self) -> None:  # Presidio's hook for loading models; patterns need nothing
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: object = None) -> list[RecognizerResult]:
        results = []
        for pattern, score in self.patterns:
            for match in pattern.finditer(text):
                start, end = match.span("value") if "value" in pattern.groupindex else match.span()
                if start == end or (self.validate is not None and not self.validate(text[start:end])):
                    continue
                results.append(RecognizerResult(self.supported_entities[0], start, end, score))
        return results


def _is_card_number(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    return 12 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits)


def card_recognizer() -> RegexRecognizer:
    """12-19 digits, in groups or not, that pass the Luhn check and start as an issuer's numbers do."""
    return RegexRecognizer(
        "CREDIT_CARD", [(r"(?<![\d-])\d(?:[ -]?\d){11,18}(?![\d-])", 0.9)], validate=_is_card_number
    )


def street_address_recognizer() -> RegexRecognizer:
    number = r"\d{1,6}[A-Za-z]?"
    words = r"(?:[\w'’À-ÿ.-]+\s+){0,4}?"
    return RegexRecognizer(
        "STREET_ADDRESS",
        [
            # 385 Gemsbok St, 103 Cassidy Street Suite 653
            (rf"\b{number},?\s+{words}(?:{STREET_TYPES})\b\.?", 0.9),
            # Via Roma 131, Rue de la Paix 12; 31 Rue Tachkent
            (rf"\b(?:{STREET_PREFIXES})\s+[\w'’À-ÿ.-]+(?:\s+[\w'’À-ÿ.-]+){{0,3}}?,?\s+{number}\b", 0.9),
            (rf"\b{number},?\s+(?:{STREET_PREFIXES})\s+[\w'’À-ÿ.-]+(?:\s+{_NAME}){{0,2}}", 0.9),
            # Villacher Strasse 89, Kiannonkatu 98, Pagari 18 is left to the context below
            (rf"\b[\w'’À-ÿ-]*(?:{STREET_SUFFIXES})\s+{number}\b", 0.9),
            (rf"\b{_NAME}\s+(?:{STREET_SUFFIXES})\s+{number}\b", 0.9),
            # an address line: house number, street, number (3654 Brixtonlaan 380, 92597 Jahu 80)
            (rf"\b{number}\s+{_NAME}(?:[ -](?:[\w'’À-ÿ.]+)){{0,3}}?\s+\d{{1,5}}[A-Za-z]?\b", 0.6),
            # Apt. 905, Suite 680, PSC 7589, Box 0572
            (rf"\b(?:{UNIT_WORDS})\s*#?\s*\d{{1,6}}[A-Za-z]?\b", 0.9),
            (r"\b(?:the )?corner of\s+[^,.?!\n]{3,60}?(?=[,.?!\n]|$)", 0.6),
            # an address announced as one
            (rf"\b(?:{ADDRESS_WORDS})\s*:?\s+(?P<value>{number}\s+[\w'’À-ÿ .-]{{3,40}}?)(?=[.,;\n]|$)", 0.55),
        ],
    )


def title_recognizer() -> RegexRecognizer:
    modifier = rf"(?:(?!(?:{_NOT_TITLE_WORDS})\b)[A-Za-z][a-z]+\s+)"
    return RegexRecognizer(
        "TITLE",
        [
            (rf"\b(?:{HONORIFICS})\.?(?=\s+[A-Z])", 0.75),
            (rf"\b{modifier}{{0,3}}(?i:{OCCUPATIONS})s?\b", 0.5),
        ],
        flags=0,  # honorifics as written (capitalized, before a capitalized name)
    )


def age_recognizer() -> RegexRecognizer:
    age = r"(?P<value>1[01]\d|\d{1,2})"
    not_a_quantity = r"(?!\s*(?:%|percent|minutes|hours|dollars|am|pm|:|\.\d))"
    return RegexRecognizer(
        "AGE",
        [
            (rf"\b{age}\s*[- ]?\s*(?:years?|yrs?|y)\s*[- ]?\s*old\b", 0.85),
            (rf"\b{age}\s*(?:y/o|y\.o\.|yo)\b", 0.85),
            (rf"\b(?:{AGE_WORDS})\s*:?\s+{age}\b{not_a_quantity}", 0.75),
            (rf"\b(?:i'm|i am|he's|he is|she's|she is)\s+{age}\b{not_a_quantity}", 0.5),
        ],
    )


def zip_code_recognizer() -> RegexRecognizer:
    code = r"(?P<value>(?:[A-Z]{1,2}-)?\d{3,5}(?:[ -]\d{2,4})?(?:\s?[A-Z]{2}\b)?)"
    return RegexRecognizer(
        "ZIP_CODE",
        [
            (rf"(?i:\b(?:{ZIP_WORDS})\s*(?:is|:|#|-)?)\s*{code}", 0.85),
            # a US state's abbreviation before it: Springfield, IL 62704
            (r",\s*[A-Z]{2}\s+(?P<value>\d{5}(?:-\d{4})?)\b", 0.6),
        ],
        flags=0,
    )


def phone_context_recognizer() -> RegexRecognizer:
    """Numbers that phonenumbers cannot place in a region (local numbers, no country code) but that
    a context word announces as a phone number."""
    number = r"(?P<value>\+?\(?\d[\d ().-]{4,18}\d)"
    words = PHONE_WORDS
    return RegexRecognizer(
        "PHONE_NUMBER",
        [
            (rf"\b(?:{words})\b\W{{0,3}}(?:is\s+|at\s+|on\s+|me\s+(?:at|on)\s+)?{number}", 0.6),
            (rf"{number}\s*[-–(]?\s*(?:office|fax|mobile|cell|home|work)\b", 0.6),
        ],
    )


def person_context_recognizer() -> RegexRecognizer:
    """A name after an honorific or a phrase that introduces one (spaCy's small model misses many
    names it has not seen, and almost every name of the languages it was not trained on)."""
    not_a_name = r"(?!(?:I|I'm|I've|I'll|I'd|It|It's|The|This|That|We|You|He|She|They|My|Our|Your)\b)"
    name = rf"(?P<value>{not_a_name}{_NAME}(?:\s+[A-Z]\.)?(?:\s+{_NAME}){{0,2}})"
    return RegexRecognizer(
        "PERSON",
        [
            (rf"\b(?:{HONORIFICS})\.?\s+{name}", 0.7),
            (rf"(?i:\b(?:{NAME_WORDS})),?\s+{name}", 0.55),
        ],
        flags=0,
    )


def place_context_recognizer() -> RegexRecognizer:
    """A place after a phrase that announces one ("lives in Ålesund", "flew to HORTEN")."""
    phrase = (
        r"live[sd]? in|living in|moved (?:here )?from|moved to|moving to|flew to|fly to|flying to|"
        r"travel(?:l?ed|ling)? to|born in|based in|city of|coming to|located in|grew up in|"
        r"originally from|visit(?:ed|ing)?|trip to|arrived in"
    )
    return RegexRecognizer("GPE", [(rf"(?i:\b(?:{phrase}))\s+(?P<value>{_PLACE})", 0.55)], flags=0)


def own_recognizers() -> list[EntityRecognizer]:
    return [
        card_recognizer(),
        street_address_recognizer(),
        title_recognizer(),
        age_recognizer(),
        zip_code_recognizer(),
        phone_context_recognizer(),
        person_context_recognizer(),
        place_context_recognizer(),
    ]
