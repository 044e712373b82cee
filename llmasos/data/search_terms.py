"""Full-text search over sealed text: each word is indexed as a keyed hash of it, never as itself.

A conversation item's text is sealed under the app's data key (AES-GCM), so SQLite's FTS5 cannot
read it; what FTS5 indexes instead is the item's words, each replaced by the first 64 bits of
HMAC-SHA256 under the app's search key (derived from its data key, destroyed with it). The query's
words are hashed the same way, so BM25 ranks exactly as over the words (term and document
frequencies and lengths are unchanged), while the index holds no word in the clear.

What this gives away, as any deterministic searchable encryption does: which items share a word,
and how often words repeat (frequency analysis). What it loses: stemming (FTS5's porter tokenizer
stems the words it reads; a hash has no stem), so "runs" does not recall "running".
"""

from __future__ import annotations

import hashlib
import hmac
import re

from llmasos.data.search import STOPWORDS

_WORD = re.compile(r"\w+")
TERM_HEX_DIGITS = 16  # 64 bits: no two words of one app collide in practice


def hashed_terms(key: bytes, text: str) -> str:
    """`text`'s words, lowercased and hashed in order, space-separated: what FTS5 indexes."""
    return " ".join(_term(key, word) for word in _WORD.findall(text.lower()))


def hashed_query(key: bytes, query: str) -> str:
    """An FTS5 MATCH expression over hashed terms: the query's content words, any of them (OR)."""
    words = [w for w in _WORD.findall(query.lower()) if w not in STOPWORDS]
    if not words:  # a query of stopwords only: search them rather than nothing
        words = _WORD.findall(query.lower())
    return " OR ".join(f'"{_term(key, w)}"' for w in dict.fromkeys(words))


def _term(key: bytes, word: str) -> str:
    # A letter first: FTS5 reads a bare token of digits as a number in some query syntax.
    return "h" + hmac.new(key, word.encode(), hashlib.sha256).hexdigest()[:TERM_HEX_DIGITS]
