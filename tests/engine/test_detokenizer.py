"""IncrementalDetokenizer: deltas add up to the full decode, never split a character, honour stops."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmasos.engine.detokenizer import IncrementalDetokenizer
from llmasos.model.tokenizer import Tokenizer
from tests.helpers.tiny_tokenizer import add_tiny_spm_tokenizer, add_tiny_tokenizer

HYPOTHESIS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load(path: Path, add) -> Tokenizer:
    writer = gguf.GGUFWriter(str(path), "llama")
    add(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Tokenizer.from_gguf(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return _load(tmp_path_factory.mktemp("tiny") / "tiny.gguf", add_tiny_tokenizer)


@pytest.fixture(scope="module")
def spm(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return _load(tmp_path_factory.mktemp("spm") / "spm.gguf", add_tiny_spm_tokenizer)


@pytest.fixture(scope="module")
def real(default_gguf_path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(default_gguf_path)


def stream(tok: Tokenizer, ids: list[int], **kwargs) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tok, **kwargs)
    deltas = [detok.add(i) for i in ids]
    deltas.append(detok.flush())
    return deltas, detok


def expected_with_stops(full: str, stops: list[str]) -> tuple[str, str | None]:
    """The reference: cut `full` at the stop string that completes first (ties: the longest)."""
    best = None
    for stop in stops:
        if stop and (start := full.find(stop)) >= 0:
            key = (start + len(stop), -len(stop))
            if best is None or key < best[0]:
                best = (key, start, stop)
    if best is None:
        return full, None
    return full[: best[1]], best[2]


def check_stream(tok: Tokenizer, ids: list[int], stops: list[str], skip: bool = True) -> None:
    deltas, detok = stream(tok, ids, stop_strings=stops, skip_special_tokens=skip)
    full = tok.decode(ids, skip_special_tokens=skip)
    expected, matched = expected_with_stops(full, stops)
    assert "".join(deltas) == expected == detok.text
    assert detok.stopped == (matched is not None)
    assert detok.matched_stop == matched


# ----------------------------------------------------------------------------- properties


@HYPOTHESIS
@given(data=st.data())
def test_random_ids_tiny(tiny: Tokenizer, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, tiny.vocab_size - 1), max_size=40))
    skip = data.draw(st.booleans())
    check_stream(tiny, ids, [], skip)


@HYPOTHESIS
@given(data=st.data())
def test_random_ids_tiny_with_stops(tiny: Tokenizer, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, tiny.vocab_size - 1), min_size=1, max_size=40))
    full = tiny.decode(ids)
    # Stop strings: substrings of the output (so they do match) and random short strings (mostly not).
    stops = []
    for _ in range(data.draw(st.integers(1, 3))):
        if full and data.draw(st.booleans()):
            start = data.draw(st.integers(0, len(full) - 1))
            stops.append(full[start : start + data.draw(st.integers(1, 6))])
        else:
            stops.append(data.draw(st.text(alphabet="the aonl.\n", min_size=1, max_size=4)))
    check_stream(tiny, ids, stops)


@HYPOTHESIS
@given(text=st.text(max_size=60), cut=st.integers(0, 60), length=st.integers(1, 8))
def test_encoded_text_spm(spm: Tokenizer, text: str, cut: int, length: int) -> None:
    # SentencePiece: leading-space handling and byte fallback on real text (the ids an LM produces).
    ids = spm.encode(text)
    check_stream(spm, ids, [])
    check_stream(spm, ids, [text[cut : cut + length]] if text[cut : cut + length] else [])


@HYPOTHESIS
@given(text=st.text(max_size=60), cut=st.integers(0, 60), length=st.integers(1, 8))
def test_encoded_text_tiny(tiny: Tokenizer, text: str, cut: int, length: int) -> None:
    ids = tiny.encode(text)
    deltas, _ = stream(tiny, ids)
    assert "".join(deltas) == tiny.decode(ids)
    assert not any("\ufffd" in d for d in deltas) or "\ufffd" in text
    check_stream(tiny, ids, [text[cut : cut + length]] if text[cut : cut + length] else [])


@pytest.mark.real_model
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_ids_real(real: Tokenizer, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, real.vocab_size - 1), max_size=30))
    check_stream(real, ids, [])
    full = real.decode(ids)
    if full:
        start = data.draw(st.integers(0, len(full) - 1))
        check_stream(real, ids, [full[start : start + data.draw(st.integers(1, 5))]])


@pytest.mark.real_model
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
def test_encoded_text_real(real: Tokenizer, text: str) -> None:
    ids = real.encode(text)
    deltas, _ = stream(real, ids)
    # Not always `text`: SmolLM2's vocabulary lacks 21 of the 256 byte symbols (e.g. 0xF1), and the
    # BPE drops bytes it has no symbol for, exactly as transformers does.
    full = real.decode(ids)
    assert "".join(deltas) == full
    assert not any("\ufffd" in d for d in deltas) or "\ufffd" in full


# ----------------------------------------------------------------------------- specific cases


@pytest.mark.parametrize("fixture", ["tiny", "spm"])
def test_multibyte_characters_never_split(request: pytest.FixtureRequest, fixture: str) -> None:
    tok: Tokenizer = request.getfixturevalue(fixture)
    text = "日本語 🙂 café 👨‍👩‍👧 Ωmega"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # the characters really are spread over byte tokens
    deltas, _ = stream(tok, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == tok.decode(ids)
    assert "".join(deltas).strip() == text


def test_leading_space_tokens_spm(spm: Tokenizer) -> None:
    ids = spm.encode("Hello the world and the model", add_special_tokens=False)
    deltas, _ = stream(spm, ids)
    assert "".join(deltas) == "Hello the world and the model"
    assert any(d.startswith(" ") for d in deltas[1:])  # later words keep their space


def test_stop_string_spanning_tokens(tiny: Tokenizer) -> None:
    ids = tiny.encode("Hello world. The end of the answer")
    detok = IncrementalDetokenizer(tiny, stop_strings=["world. Th"])
    deltas = [detok.add(i) for i in ids]
    assert "".join(deltas) == "Hello "
    assert detok.stopped and detok.matched_stop == "world. Th"
    assert detok.add(ids[0]) == "" and detok.flush() == ""
    assert detok.text == "Hello "


def test_partial_stop_is_held_then_flushed(tiny: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny, stop_strings=["<END>"])
    out = "".join(detok.add(i) for i in tiny.encode("the answer <EN"))
    assert out == "the answer "  # "<EN" might still become "<END>"
    assert detok.flush() == "<EN"
    assert not detok.stopped and detok.text == "the answer <EN"


def test_earliest_completed_stop_wins(tiny: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny, stop_strings=["abcd", "bc"])
    out = "".join(detok.add(i) for i in tiny.encode("xabcd"))
    assert out == "xa" and detok.matched_stop == "bc"


def test_special_tokens_skipped_or_kept(tiny: Tokenizer) -> None:
    ids = tiny.encode("<|im_start|>assistant\nHi<|im_end|>")
    assert "".join(stream(tiny, ids)[0]) == "assistant\nHi"
    assert "".join(stream(tiny, ids, skip_special_tokens=False)[0]) == "<|im_start|>assistant\nHi<|im_end|>"
    detok = IncrementalDetokenizer(tiny, stop_strings=["<|im_end|>"], skip_special_tokens=False)
    assert "".join(detok.add(i) for i in ids) == "<|im_start|>assistant\nHi" and detok.stopped


def test_decode_window_stays_short(tiny: Tokenizer) -> None:
    class Counting:
        def __init__(self) -> None:
            self.longest = 0

        def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
            self.longest = max(self.longest, len(ids))
            return tiny.decode(ids, skip_special_tokens=skip_special_tokens)

    counting = Counting()
    detok = IncrementalDetokenizer(counting)
    ids = tiny.encode("the model and the world " * 50 + "日本語 🙂")
    text = "".join(detok.add(i) for i in ids) + detok.flush()
    assert text == tiny.decode(ids)
    assert counting.longest <= 6  # a window of a few tokens, not the whole output
