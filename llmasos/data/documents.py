"""Reading an uploaded file into text: plain text, Markdown, HTML, PDF (pypdf) and JSON lines.

The result keeps the structure the chunker splits on: Markdown headings (`#` lines; HTML headings are
written as such) and paragraphs (blank lines). A JSON-lines file is a list of items instead, one a
line, each its own chunk with its fields kept as metadata.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePath

from llmasos.errors import UnsupportedFileError

#: Characters of text one file may yield: a compressed PDF can expand far past its upload size.
MAX_TEXT_CHARS = 20_000_000
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text", ".rst", ".csv", ".log", ""}
HTML_SUFFIXES = {".html", ".htm"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
#: The field of a JSON-lines item that holds its text; the item's other fields become metadata.
TEXT_FIELDS = ("text", "content", "body")


@dataclass
class Item:
    """One JSON-lines record: its text and its other fields."""

    text: str
    meta: dict = field(default_factory=dict)


@dataclass
class Document:
    """A file's text (what spans refer to), or its items for JSON lines."""

    text: str
    items: list[Item] | None = None


def read_document(filename: str, content: bytes) -> Document:
    """The text of `content`, read as its file name's suffix says; UnsupportedFileError if it is
    empty, of another kind, or not what it claims to be."""
    if not content:
        raise UnsupportedFileError(f"{filename!r} is empty (0 bytes); upload a file with text in it")
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".pdf":
        document = Document(_pdf_text(filename, content))
    elif suffix in HTML_SUFFIXES:
        document = Document(_html_text(_decode(filename, content)))
    elif suffix in JSONL_SUFFIXES:
        document = _json_lines(filename, _decode(filename, content))
    elif suffix in TEXT_SUFFIXES or suffix == ".json":
        document = Document(_decode(filename, content))
    else:
        raise UnsupportedFileError(
            f"{filename!r}: files of type {suffix!r} are not supported; upload .txt, .md, .html, .pdf "
            "or .jsonl"
        )
    if len(document.text) > MAX_TEXT_CHARS:
        raise UnsupportedFileError(
            f"{filename!r} expands to more than {MAX_TEXT_CHARS:,} characters of text; split it into "
            "smaller files"
        )
    if not document.text.strip() and not document.items:
        raise UnsupportedFileError(f"{filename!r} holds no text to index")
    return document


def _decode(filename: str, content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UnsupportedFileError(
            f"{filename!r} is not UTF-8 text (byte {err.start} is not valid); convert it to UTF-8"
        ) from None


def _pdf_text(filename: str, content: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PyPdfError

    if not content.lstrip().startswith(b"%PDF-"):
        raise UnsupportedFileError(f"{filename!r} is not a PDF (it does not start with %PDF-)")
    try:
        reader = PdfReader(io.BytesIO(content))
        pages, size = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            size += len(text)
            if size > MAX_TEXT_CHARS:
                raise UnsupportedFileError(
                    f"{filename!r} expands to more than {MAX_TEXT_CHARS:,} characters of text; split it"
                )
            pages.append(text.strip())
    except LimitReachedError:
        # pypdf stops inflating a stream past its limit (75 MB): a compression bomb, or a PDF too
        # big to index whole; either way it is refused before it takes the memory.
        raise UnsupportedFileError(
            f"{filename!r} expands past the limit for one PDF stream when decompressed (a compression "
            "bomb, or a file to split into smaller ones); it was not indexed"
        ) from None
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as err:
        raise UnsupportedFileError(f"{filename!r} is a damaged PDF that cannot be read ({err})") from None
    return "\n\n".join(p for p in pages if p)


def _json_lines(filename: str, text: str) -> Document:
    items: list[Item] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UnsupportedFileError(f"{filename!r} line {number} is not JSON ({err.msg})") from None
        if isinstance(record, str):
            items.append(Item(record))
            continue
        if not isinstance(record, dict):
            raise UnsupportedFileError(f"{filename!r} line {number}: each line must be an object or a string")
        key = next((k for k in TEXT_FIELDS if isinstance(record.get(k), str)), None)
        if key is None:
            raise UnsupportedFileError(
                f"{filename!r} line {number} has no text field; "
                f"give each object one of {', '.join(TEXT_FIELDS)}"
            )
        meta = {k: v for k, v in record.items() if k != key}
        items.append(Item(record[key], meta))
    return Document("\n".join(item.text for item in items), items)


class _HtmlToText(HTMLParser):
    """Headings as Markdown `#` lines, block elements as paragraphs; scripts and styles dropped."""

    BLOCKS = frozenset({"p", "div", "li", "tr", "br", "section", "article", "pre", "blockquote", "table"})
    SKIP = frozenset({"script", "style", "head", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456") or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(" ".join(data.split()) if data.strip() else " ")


def _html_text(html: str) -> str:
    parser = _HtmlToText()
    parser.feed(html)
    parser.close()
    paragraphs = [" ".join(p.split()) for p in "".join(parser.parts).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)
