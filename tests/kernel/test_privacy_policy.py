"""An app's personal-data policy, enforced in the system calls whatever the interface: per direction,
what the engine is given (its input, checked at the engine's boundary) and what the app receives."""

from __future__ import annotations

import pytest

from llmasos.engine.sampling import SamplingParams
from llmasos.errors import InvalidRequestError, PersonalDataBlockedError
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog
from tests.helpers.echo_engine import EchoEngine

PERSON = "Marisa Alves"
EMAIL = "marisa.alves@example.com"
PROMPT = f"My name is {PERSON}, write to {EMAIL} please."
ECHO = SamplingParams(max_tokens=200, temperature=0)


@pytest.fixture
def system() -> tuple[Syscalls, EchoEngine]:
    engine = EchoEngine()
    kernel = Kernel(ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1), KernelConfig())
    return Syscalls(kernel, AppRegistry(), audit=AuditLog()), engine


def answer(syscalls: Syscalls, app: App, messages: list[dict]) -> str:
    process = syscalls.chat(app, "echo", messages, ECHO)
    syscalls.kernel.run_until_idle()
    return "".join(e.text for e in syscalls.events(app, process.pid))


def registered(syscalls: Syscalls, name: str, pii: str | list[str], **fields) -> App:
    return syscalls.apps.create(App(name, pii=pii, **fields))


def test_pseudonymize_hides_values_from_the_engine_and_restores_them_for_the_app(system) -> None:
    syscalls, engine = system
    app = registered(syscalls, "clinic", "pseudonymize")
    reply = answer(syscalls, app, [{"role": "user", "content": PROMPT}])
    seen = engine.prompts[-1]
    assert PERSON not in seen and EMAIL not in seen
    assert "<PERSON_1>" in seen and "<EMAIL_ADDRESS_1>" in seen
    assert reply == f"user: {PROMPT}\n"  # the echo of the placeholders, restored


def test_placeholders_are_stable_across_an_apps_requests_and_apart_between_apps(system) -> None:
    syscalls, engine = system
    first, second = registered(syscalls, "a", "pseudonymize"), registered(syscalls, "b", "pseudonymize")
    answer(syscalls, first, [{"role": "user", "content": f"Hi, I'm Oskar Lindqvist. {PROMPT}"}])
    answer(syscalls, first, [{"role": "user", "content": PROMPT}])
    assert "<PERSON_2>" in engine.prompts[-1]  # Marisa is the app's second person, both times
    reply = answer(syscalls, second, [{"role": "user", "content": "Who is <PERSON_2>?"}])
    assert PERSON not in reply  # another app's placeholder restores nothing


def test_outputs_off_shows_placeholders_and_redact_shows_types(system) -> None:
    syscalls, _ = system
    off = registered(syscalls, "raw", ["prompts=pseudonymize"])
    assert "<PERSON_1>" in answer(syscalls, off, [{"role": "user", "content": PROMPT}])
    redacted = registered(syscalls, "red", ["prompts=pseudonymize", "outputs=redact"])
    reply = answer(syscalls, redacted, [{"role": "user", "content": PROMPT}])
    assert "[PERSON]" in reply and "[EMAIL_ADDRESS]" in reply and PERSON not in reply


def test_redact_removes_values_for_good(system) -> None:
    syscalls, engine = system
    app = registered(syscalls, "press", "redact")
    reply = answer(syscalls, app, [{"role": "user", "content": PROMPT}])
    assert engine.prompts[-1] == "user: My name is [PERSON], write to [EMAIL_ADDRESS] please.\n"
    assert PERSON not in reply


def test_block_refuses_naming_the_types_and_is_audited(system) -> None:
    syscalls, engine = system
    app = registered(syscalls, "strict", "block")
    with pytest.raises(PersonalDataBlockedError) as refused:
        syscalls.chat(app, "echo", [{"role": "user", "content": PROMPT}], ECHO)
    assert refused.value.http_status == 400
    assert "EMAIL_ADDRESS" in refused.value.message and "PERSON" in refused.value.message
    assert PERSON not in refused.value.message and EMAIL not in refused.value.message
    assert engine.prompts == []
    refusal = syscalls.audit.query(app="strict")[0]  # newest first
    assert refusal["call"] == "chat" and refusal["outcome"] != "ok" and "PERSON" in refusal["reason"]
    assert answer(syscalls, app, [{"role": "user", "content": "What is two plus two?"}])  # no data: served


def test_completions_follow_the_prompts_policy_too(system) -> None:
    syscalls, engine = system
    app = registered(syscalls, "writer", "pseudonymize")
    process = syscalls.generate(app, "echo", PROMPT, ECHO)
    syscalls.kernel.run_until_idle()
    assert PERSON not in engine.prompts[-1]
    assert "".join(e.text for e in syscalls.events(app, process.pid)) == PROMPT


def test_streamed_deltas_never_carry_part_of_a_placeholder(system) -> None:
    syscalls, _ = system
    app = registered(syscalls, "stream", "pseudonymize")
    process = syscalls.chat(app, "echo", [{"role": "user", "content": PROMPT}], ECHO)
    deltas: list[str] = []
    syscalls.subscribe(app, process.pid, lambda e: deltas.append(e.text))
    syscalls.kernel.run_until_idle()
    assert "".join(deltas) == f"user: {PROMPT}\n"
    assert not any("<" in d or "_1" in d for d in deltas)


def test_audit_content_keeps_placeholders_not_values(system) -> None:
    syscalls, _ = system
    app = registered(syscalls, "kept", ["prompts=pseudonymize", "outputs=pseudonymize"], audit_content=True)
    answer(syscalls, app, [{"role": "user", "content": PROMPT}])
    kept = str(syscalls.audit.query(app="kept"))  # the start row's prompt, the end row's output
    assert "<PERSON_1>" in kept and PERSON not in kept and EMAIL not in kept


def test_audit_direction_alone_redacts_the_audit_row(system) -> None:
    syscalls, engine = system
    app = registered(syscalls, "logged", ["audit=redact"], audit_content=True)
    answer(syscalls, app, [{"role": "user", "content": PROMPT}])
    assert PERSON in engine.prompts[-1]  # prompts off: the model sees the text as sent
    prompts = [r["prompt"] for r in syscalls.audit.query(app="logged") if r["prompt"]]
    assert prompts and "[PERSON]" in prompts[0] and PERSON not in prompts[0]


def test_an_app_without_a_policy_is_served_as_before(system) -> None:
    syscalls, engine = system
    app = registered(syscalls, "plain", "off")
    assert answer(syscalls, app, [{"role": "user", "content": PROMPT}]) == f"user: {PROMPT}\n"
    assert PERSON in engine.prompts[-1]
    assert syscalls.pii_counts() == {}  # nothing was even read


def test_removing_an_app_forgets_its_placeholders_values(system) -> None:
    syscalls, _ = system
    app = registered(syscalls, "gone", "pseudonymize")
    answer(syscalls, app, [{"role": "user", "content": PROMPT}])
    assert len(syscalls.privacy.vault(app.identity)) == 2
    syscalls.remove_app(syscalls.apps.create(App("root", capabilities=("admin",))), "gone")
    assert len(syscalls.privacy.vault(app.identity)) == 0


def test_a_prompt_with_a_lone_surrogate_is_refused_as_bad_input_not_crashed_on(system) -> None:
    syscalls, engine = system
    app = registered(syscalls, "odd", "pseudonymize")
    with pytest.raises(InvalidRequestError, match="lone surrogate"):
        syscalls.chat(app, "echo", [{"role": "user", "content": f"Hi \ud800, {PROMPT}"}], ECHO)
    assert engine.prompts == []
