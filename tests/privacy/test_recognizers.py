"""The detector on sentences written for each rule: checksums decide cards and IBANs, context words
decide ages, zip codes and local phone numbers, and overlaps leave one entity per character."""

from __future__ import annotations

from stdnum import iban, luhn

from llmasos.privacy.detector import PiiDetector, resolve_overlaps
from llmasos.privacy.entities import Detection


def found(detector: PiiDetector, text: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for d in detector.detect(text):
        result.setdefault(d.entity_type, []).append(text[d.start : d.end])
    return result


def test_a_card_number_counts_only_when_its_luhn_check_digit_is_right(detector) -> None:
    body = "453201511283036"
    good = body + luhn.calc_check_digit(body)
    bad = body + str((int(luhn.calc_check_digit(body)) + 1) % 10)
    assert found(detector, f"Please charge card {good} today").get("CREDIT_CARD") == [good]
    assert "CREDIT_CARD" not in found(detector, f"Please charge card {bad} today")


def test_a_13_digit_card_that_presidios_patterns_miss_is_found(detector) -> None:
    body = "447700699810"
    card = body + luhn.calc_check_digit(body)
    assert found(detector, f"Please block card no {card}").get("CREDIT_CARD") == [card]


def test_an_iban_counts_only_with_its_mod_97_checksum(detector) -> None:
    good = "GB82WEST12345698765432"
    assert iban.is_valid(good)
    bad = "GB83WEST12345698765432"
    assert found(detector, f"Send it to {good} please").get("IBAN_CODE") == [good]
    assert "IBAN_CODE" not in found(detector, f"Send it to {bad} please")


def test_emails_ssns_and_ips(detector) -> None:
    text = "Mail ann.lee@example.com, SSN 536-22-8726, from 192.168.14.201."
    result = found(detector, text)
    assert result["EMAIL_ADDRESS"] == ["ann.lee@example.com"]
    assert result["US_SSN"] == ["536-22-8726"]
    assert result["IP_ADDRESS"] == ["192.168.14.201"]


def test_an_age_needs_a_context_word(detector) -> None:
    assert found(detector, "My brother just turned 53").get("AGE") == ["53"]
    assert found(detector, "Patient is a 38-year-old male").get("AGE") == ["38"]
    assert "AGE" not in found(detector, "We sold 53 boxes of apples")


def test_a_zip_code_needs_a_context_word(detector) -> None:
    assert found(detector, "My zip code is 2200").get("ZIP_CODE") == ["2200"]
    assert "ZIP_CODE" not in found(detector, "There were 2200 people at the fair")


def test_a_local_phone_number_is_found_after_a_phone_word_not_as_a_date(detector) -> None:
    result = found(detector, "They're not answering at 079 2718 1155")
    assert result.get("PHONE_NUMBER") == ["079 2718 1155"]
    assert "DATE_TIME" not in result


def test_street_addresses_titles_and_named_people(detector) -> None:
    result = found(detector, "Mr. Oskar Lindqvist moved to 385 Gemsbok Street, Apt. 905 last year.")
    assert result["TITLE"] == ["Mr"]
    assert result["PERSON"] == ["Oskar Lindqvist"]
    assert "385 Gemsbok Street" in result["STREET_ADDRESS"]
    assert "Apt. 905" in result["STREET_ADDRESS"]
    assert found(detector, "I used to work as a registered nurse there.").get("TITLE") == ["registered nurse"]


def test_vague_dates_are_not_personal_data_but_a_birthday_is(detector) -> None:
    assert found(detector, "She was born on 9/20/1968.").get("DATE_TIME") == ["9/20/1968"]
    assert "DATE_TIME" not in found(detector, "I quit a few months ago.")


def test_nothing_in_text_without_personal_data(detector) -> None:
    assert detector.detect("") == []
    assert found(detector, "\ud800 card 4539015112830369") == {"CREDIT_CARD": ["4539015112830369"]}
    assert found(detector, "The weather is nice and the tea is hot.") == {}


def test_overlaps_keep_the_stronger_span_and_what_is_left_of_the_other() -> None:
    text = "Mrs. Diana Usamov Suite 913"
    name = Detection("PERSON", 5, 23, 0.85)  # "Diana Usamov Suite"
    unit = Detection("STREET_ADDRESS", 18, 27, 0.9)  # "Suite 913"
    kept = resolve_overlaps([name, unit], text)
    assert [(d.entity_type, text[d.start : d.end]) for d in kept] == [
        ("PERSON", "Diana Usamov"),
        ("STREET_ADDRESS", "Suite 913"),
    ]
    inside = Detection("DATE_TIME", 24, 27, 0.5)
    assert resolve_overlaps([unit, inside], text) == [unit]
