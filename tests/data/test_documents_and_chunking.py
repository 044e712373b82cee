"""Reading uploads and chunking them by structure: spans that point into the text, headings that
bound chunks, overlap, items of JSON lines, and clear refusals of what cannot be read."""

from __future__ import annotations

import itertools
import resource

import pytest

from llmasos.data.chunking import ChunkingStrategy, chunk_document, count_tokens
from llmasos.data.documents import read_document
from llmasos.errors import InvalidRequestError, UnsupportedFileError
from tests.helpers.pdf import compression_bomb_pdf, minimal_pdf

MARKDOWN = """Intro line before any heading.

# Animals

## Cats

Cats sleep for most of the day. They hunt at dusk.

Cats purr when content.

## Dogs

Dogs bark at strangers.

# Plants

Ferns like shade.
"""


def test_chunks_follow_headings_and_point_into_the_text() -> None:
    document = read_document("notes.md", MARKDOWN.encode())
    chunks = chunk_document(document, ChunkingStrategy())
    assert [c.heading for c in chunks] == ["", "Animals > Cats", "Animals > Dogs", "Plants"]
    for chunk in chunks:
        assert document.text[chunk.start : chunk.end] == chunk.text
    assert "Cats purr" in chunks[1].text and "Dogs" not in chunks[1].text
    assert chunks[2].search_text.startswith("Animals > Dogs\n")


def test_a_long_section_splits_under_the_budget_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about topic {i} at some length here." for i in range(60)]
    text = "# Long\n\n" + "\n\n".join(" ".join(sentences[i : i + 3]) for i in range(0, 60, 3))
    strategy = ChunkingStrategy(max_tokens=60, overlap_tokens=20)
    chunks = chunk_document(read_document("long.md", text.encode()), strategy)
    assert len(chunks) > 5
    assert all(count_tokens(c.text) <= 60 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "neighbours of one section overlap"
        assert after.start > before.start
    covered = "".join(text[c.start : c.end] for c in chunks)
    assert all(s in covered for s in sentences), "no sentence is lost"


def test_html_headings_become_sections_and_scripts_are_dropped() -> None:
    html = (
        b"<html><head><script>var x=1;</script></head><body>"
        b"<h1>Guide</h1><p>Step one.</p><h2>More</h2><p>Step two.</p></body></html>"
    )
    chunks = chunk_document(read_document("page.html", html), ChunkingStrategy())
    assert [(c.heading, c.text) for c in chunks] == [("Guide", "Step one."), ("Guide > More", "Step two.")]


def test_json_lines_are_one_chunk_per_item_with_fields_as_metadata() -> None:
    lines = b'{"text": "I adopted a puppy", "speaker": "Caroline", "dia_id": "D1:3"}\n"a bare string"\n'
    document = read_document("turns.jsonl", lines)
    chunks = chunk_document(document, ChunkingStrategy())
    assert [c.text for c in chunks] == ["I adopted a puppy", "a bare string"]
    assert chunks[0].meta == {"speaker": "Caroline", "dia_id": "D1:3"}
    assert "Caroline" in chunks[0].search_text and "D1:3" not in chunks[0].search_text
    assert document.text[chunks[1].start : chunks[1].end] == "a bare string"


def test_a_real_pdf_is_read() -> None:
    document = read_document("paper.pdf", minimal_pdf("Retrieval needs citations"))
    assert "Retrieval needs citations" in document.text


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("fake.pdf", b"this is not a pdf at all", "not a PDF"),
        ("broken.pdf", b"%PDF-1.4\n garbage \x00\x01 no objects", "damaged PDF"),
        ("empty.txt", b"", "empty"),
        ("latin.txt", "caf\u00e9".encode("latin-1"), "not UTF-8"),
        ("archive.zip", b"PK\x03\x04", "not supported"),
        ("bad.jsonl", b'{"text": "ok"}\n{oops\n', "line 2 is not JSON"),
        ("blank.md", b"\n\n   \n", "no text"),
    ],
)
def test_unreadable_files_are_refused_with_what_is_wrong(name: str, content: bytes, says: str) -> None:
    with pytest.raises(UnsupportedFileError, match=says):
        read_document(name, content)


def test_a_compression_bomb_is_refused_before_it_expands() -> None:
    """A 1 MB PDF whose page inflates to 1 GiB: refused by pypdf's decompression limit, without
    the gigabyte ever being held (the whole test's peak memory stays far under it)."""
    bomb = compression_bomb_pdf(2**30)
    assert len(bomb) < 2 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with pytest.raises(UnsupportedFileError, match="expands past"):
        read_document("bomb.pdf", bomb)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < 512 * 2**20, f"peak memory grew by {grown:,} bytes"


def test_chunking_strategy_follows_openai_and_refuses_nonsense() -> None:
    strategy = ChunkingStrategy.from_openai(
        {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}
    )
    assert (strategy.max_tokens, strategy.overlap_tokens) == (200, 50)
    assert ChunkingStrategy.from_openai({"type": "auto"}) == ChunkingStrategy()
    with pytest.raises(InvalidRequestError, match="chunk_overlap_tokens"):
        ChunkingStrategy.from_openai(
            {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 90}}
        )
