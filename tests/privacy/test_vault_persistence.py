"""The pseudonym vault outlives the process: kept in the app's database with each value sealed under
the app's data key, a vault made anew (a restart) restores the placeholders stored text holds, gives
known values their old placeholders and new values fresh numbers (never one an earlier value had),
and keeps no value in the clear on disk; deleting the app leaves nothing to restore."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.data.app_data import delete_app_data
from llmasos.data.pseudonym_store import pseudonym_store
from llmasos.privacy.guard import PrivacyGuard
from llmasos.privacy.pseudonyms import PseudonymVault
from llmasos.security import master_key

OWNER = "id:0123456789abcdef"


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def test_a_new_vault_restores_what_the_old_one_gave(llmasos_home: Path) -> None:
    before = PseudonymVault(pseudonym_store(OWNER))
    assert before.placeholder("PERSON", "Ingrid Nakamqvist") == "<PERSON_1>"
    assert before.placeholder("PERSON", "Kwame Brennura") == "<PERSON_2>"
    assert before.placeholder("EMAIL_ADDRESS", "kb@example.com") == "<EMAIL_ADDRESS_1>"

    after = PseudonymVault(pseudonym_store(OWNER))  # what a restarted server builds
    stored = "<PERSON_2> wrote to <EMAIL_ADDRESS_1> about <PERSON_1> and <PERSON_9>"
    assert (
        after.restore(stored)
        == "Kwame Brennura wrote to kb@example.com about Ingrid Nakamqvist and <PERSON_9>"
    )
    assert after.placeholder("PERSON", "Ingrid Nakamqvist") == "<PERSON_1>"
    assert after.placeholder("PERSON", "Sofia Lindsen") == "<PERSON_3>"
    on_disk = b"".join(p.read_bytes() for p in llmasos_home.rglob("*") if p.is_file())
    assert b"Nakamqvist" not in on_disk and b"kb@example.com" not in on_disk

    delete_app_data(OWNER)
    assert len(PseudonymVault(pseudonym_store(OWNER))) == 0


def test_the_guard_keeps_vaults_in_the_store_it_is_given(llmasos_home: Path) -> None:
    PrivacyGuard(vault_store=pseudonym_store).vault(OWNER).placeholder("PERSON", "Tomasz Ferrini")
    assert PrivacyGuard(vault_store=pseudonym_store).vault(OWNER).restore("<PERSON_1>") == "Tomasz Ferrini"
    assert PrivacyGuard().vault(OWNER).restore("<PERSON_1>") == "<PERSON_1>"  # in memory only
