"""Placeholders: stable per app, restored whole in a stream however the deltas cut them, and the
policy's spelling on the command line and over HTTP."""

from __future__ import annotations

import pytest

from llmasos.errors import InvalidRequestError
from llmasos.privacy.entities import Detection
from llmasos.privacy.policy import PiiPolicy
from llmasos.privacy.pseudonyms import (
    PseudonymVault,
    StreamRestorer,
    pseudonymize,
    redact,
    redact_placeholders,
)

TEXT = "Ann Lee wrote to bob@example.com; Ann Lee again."
SPANS = [
    Detection("PERSON", 0, 7, 0.9),
    Detection("EMAIL_ADDRESS", 17, 32, 1.0),
    Detection("PERSON", 34, 41, 0.9),
]


def test_a_value_gets_the_same_placeholder_every_time_and_restores() -> None:
    vault = PseudonymVault()
    hidden = pseudonymize(TEXT, SPANS, vault)
    assert hidden == "<PERSON_1> wrote to <EMAIL_ADDRESS_1>; <PERSON_1> again."
    assert pseudonymize("Ann Lee", [Detection("PERSON", 0, 7, 0.9)], vault) == "<PERSON_1>"
    assert vault.restore(hidden) == TEXT
    assert vault.restore("<PERSON_9> is not ours") == "<PERSON_9> is not ours"


def test_redaction_keeps_only_the_type() -> None:
    assert redact(TEXT, SPANS) == "[PERSON] wrote to [EMAIL_ADDRESS]; [PERSON] again."
    assert redact_placeholders("Hi <PERSON_2>!") == "Hi [PERSON]!"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_a_placeholder_split_across_deltas_is_restored_whole(size: int) -> None:
    vault = PseudonymVault()
    placeholder = vault.placeholder("PERSON", "Ann Lee")
    stream = f"Dear {placeholder}, a < b and <3. Bye {placeholder}"
    restorer = StreamRestorer(vault.restore)
    pieces = [restorer.feed(stream[i : i + size]) for i in range(0, len(stream), size)]
    pieces.append(restorer.flush())
    assert "".join(pieces) == "Dear Ann Lee, a < b and <3. Bye Ann Lee"
    assert not any("<PER" in p or "SON_" in p for p in pieces)  # no piece of a placeholder leaks


def test_text_that_only_looks_like_a_placeholder_start_is_let_go() -> None:
    restorer = StreamRestorer(PseudonymVault().restore)
    assert restorer.feed("x <") == "x "
    assert restorer.feed("= y") == "<= y"  # held only while it could still be a placeholder
    assert restorer.feed("<UNFINISHED") == ""
    assert restorer.flush() == "<UNFINISHED"


def test_policy_spellings() -> None:
    assert PiiPolicy.parse("pseudonymize") == PiiPolicy(
        "pseudonymize", "pseudonymize", "pseudonymize", "pseudonymize"
    )
    assert PiiPolicy.parse(["block"]).outputs == "redact"  # an answer is not refused, it is redacted
    assert PiiPolicy.parse(["redact", "audit=off"]) == PiiPolicy("redact", "redact", "redact", "off")
    assert PiiPolicy.parse({"prompts": "block"}) == PiiPolicy(prompts="block")
    assert PiiPolicy.parse(None).is_off


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("hide", "is not one of off, pseudonymize, redact, block"),
        ("prompt=redact", "no direction 'prompt'"),
        ("outputs=block", "outputs takes off, pseudonymize, redact"),
    ],
)
def test_a_bad_policy_says_what_is_accepted(spec: str, says: str) -> None:
    with pytest.raises(InvalidRequestError, match=says):
        PiiPolicy.parse(spec)
