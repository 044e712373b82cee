"""Splitting a document into chunks by its structure: sections under headings, then paragraphs,
then sentences, packed up to a token budget with an overlap between neighbours of one section.

A chunk is a span of the document's text (`start`, `end`), so an answer can cite exactly where it
came from. Chunks never cross a heading. A JSON-lines item is a chunk of its own (split only if it is
over the budget), with its fields indexed beside its text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llmasos.data.documents import Document
from llmasos.errors import InvalidRequestError

# all-MiniLM-L6-v2 reads 256 word pieces and drops the rest; 160 of our tokens (words and
# punctuation) stay under that for English prose, so no chunk is embedded only in part.
DEFAULT_MAX_TOKENS = 160
DEFAULT_OVERLAP_TOKENS = 32
MIN_MAX_TOKENS, MAX_MAX_TOKENS = 16, 4096  # OpenAI allows 100-4096; small budgets help tests and notes

_TOKEN = re.compile(r"\w+|[^\w\s]")
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close to (a little under) a word-piece tokenizer's count."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class ChunkingStrategy:
    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    @classmethod
    def from_openai(cls, strategy: dict | None) -> ChunkingStrategy:
        """From OpenAI's `chunking_strategy` (`{"type": "auto"}` or `{"type": "static", "static":
        {"max_chunk_size_tokens", "chunk_overlap_tokens"}}`)."""
        if not strategy or strategy.get("type") == "auto":
            return cls()
        if strategy.get("type") != "static" or not isinstance(strategy.get("static"), dict):
            raise InvalidRequestError('chunking_strategy must be {"type": "auto"} or {"type": "static", ...}')
        static = strategy["static"]
        size = static.get("max_chunk_size_tokens", DEFAULT_MAX_TOKENS)
        overlap = static.get("chunk_overlap_tokens", DEFAULT_OVERLAP_TOKENS)
        if not isinstance(size, int) or not MIN_MAX_TOKENS <= size <= MAX_MAX_TOKENS:
            raise InvalidRequestError(
                f"max_chunk_size_tokens must be an integer in [{MIN_MAX_TOKENS}, {MAX_MAX_TOKENS}]"
            )
        if not isinstance(overlap, int) or not 0 <= overlap <= size // 2:
            raise InvalidRequestError(
                "chunk_overlap_tokens must be an integer in [0, max_chunk_size_tokens / 2]"
            )
        return cls(size, overlap)

    def to_openai(self) -> dict:
        return {
            "type": "static",
            "static": {"max_chunk_size_tokens": self.max_tokens, "chunk_overlap_tokens": self.overlap_tokens},
        }


@dataclass
class Chunk:
    text: str
    start: int
    end: int
    heading: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def search_text(self) -> str:
        """What the indexes see: the section's heading and the item's descriptive fields with the
        text (identifiers such as `id` or `dia_id` are left out: they are not words anyone searches)."""
        fields = [
            f"{value}"
            for key, value in self.meta.items()
            if isinstance(value, str) and not _is_identifier(key)
        ]
        return "\n".join(part for part in (self.heading, " ".join(fields), self.text) if part)

    def meta_json(self) -> str:
        return json.dumps(self.meta, ensure_ascii=False)


def _is_identifier(key: str) -> bool:
    key = key.lower()
    return key == "id" or key.endswith(("_id", "-id"))


def chunk_document(document: Document, strategy: ChunkingStrategy) -> list[Chunk]:
    if document.items is not None:
        return _chunk_items(document, strategy)
    chunks: list[Chunk] = []
    for heading, units in _sections(document.text, strategy.max_tokens):
        chunks.extend(_pack(document.text, units, heading, strategy))
    return chunks


def _chunk_items(document: Document, strategy: ChunkingStrategy) -> list[Chunk]:
    chunks, offset = [], 0
    for item in document.items or []:
        units = _split_long(document.text, offset, offset + len(item.text), strategy.max_tokens)
        for chunk in _pack(document.text, units, "", strategy):
            chunk.meta = dict(item.meta)
            chunks.append(chunk)
        offset += len(item.text) + 1  # the "\n" that joins items in the document's text
    return chunks


Unit = tuple[int, int, int]  # (start, end, tokens): a sentence (or a window of a long one)


def _sections(text: str, max_tokens: int) -> list[tuple[str, list[Unit]]]:
    """(heading path, its paragraphs as units) in order; text before any heading has heading ''."""
    sections: list[tuple[str, list[Unit]]] = [("", [])]
    path: list[tuple[int, str]] = []
    position = 0
    for block in re.split(r"(\n\s*\n)", text):
        start, end = position, position + len(block)
        position = end
        if not block.strip():
            continue
        lines, line_start = block.split("\n"), start
        paragraph_start = None
        for line in lines:
            match = _HEADING.match(line)
            if match:
                if paragraph_start is not None:
                    sections[-1][1].extend(_split_long(text, paragraph_start, line_start - 1, max_tokens))
                    paragraph_start = None
                level = len(match.group(1))
                path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2))]
                sections.append((" > ".join(title for _, title in path), []))
            elif paragraph_start is None and line.strip():
                paragraph_start = line_start
            line_start += len(line) + 1
        if paragraph_start is not None:
            sections[-1][1].extend(_split_long(text, paragraph_start, end, max_tokens))
    return [(heading, units) for heading, units in sections if units]


def _split_long(text: str, start: int, end: int, max_tokens: int) -> list[Unit]:
    """The span's sentences as units (a sentence over the budget as windows of words): the packer
    fills chunks by sentence and overlaps neighbours by whole sentences."""
    span = text[start:end]
    stripped_end = start + len(span.rstrip())
    start += len(span) - len(span.lstrip())
    if not count_tokens(text[start:stripped_end]):
        return []
    units: list[Unit] = []
    position = start
    for piece in _SENTENCE_END.split(text[start:stripped_end]):
        piece_start = text.index(piece, position)
        piece_end = piece_start + len(piece)
        position = piece_end
        piece_tokens = count_tokens(piece)
        if piece_tokens <= max_tokens:
            units.append((piece_start, piece_end, piece_tokens))
            continue
        words = list(re.finditer(r"\S+", piece))
        for first in range(0, len(words), max(1, max_tokens // 2)):
            window = words[first : first + max(1, max_tokens // 2)]
            a, b = piece_start + window[0].start(), piece_start + window[-1].end()
            units.append((a, b, count_tokens(text[a:b])))
    return units


def _pack(text: str, units: list[Unit], heading: str, strategy: ChunkingStrategy) -> list[Chunk]:
    """Consecutive units into chunks of at most max_tokens; each next chunk starts with the last
    units of the one before that fit in overlap_tokens."""
    chunks: list[Chunk] = []
    first = 0
    while first < len(units):
        last, total = first, units[first][2]
        while last + 1 < len(units) and total + units[last + 1][2] <= strategy.max_tokens:
            last += 1
            total += units[last][2]
        start, end = units[first][0], units[last][1]
        chunks.append(Chunk(text[start:end], start, end, heading))
        if last + 1 >= len(units):
            break
        carried, next_first = 0, last + 1
        while next_first - 1 > first and carried + units[next_first - 1][2] <= strategy.overlap_tokens:
            next_first -= 1
            carried += units[next_first][2]
        first = next_first
    return chunks
