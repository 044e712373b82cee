"""Full-text search over encrypted text: three ways to keep an app's chunks with BM25 search, measured
in the same run on the same synthetic chunks (issue 27, gap 2: chunks and their FTS5 index are the
part of an app's data still stored in the clear).

    PYTHONPATH=. .venv/bin/python benchmarks/sealed_search.py [--chunks 20000] [--queries 200]

- `plain`: today's chunks table: text in the clear, FTS5 with the porter tokenizer.
- `sqlcipher`: the same schema in a SQLCipher database (`sqlcipher3-binary`, AES-256 page encryption
  keyed by a 256-bit key, as an app's data key would key it): every page on disk, the index's
  included, is ciphertext; search is unchanged.
- `hashed`: what conversations use now (llmasos/data/search_terms.py): each text sealed with AES-GCM,
  the FTS5 index over HMAC-hashed words (no stemming); the top hits are decrypted after the search.

`--cache-mib` sets SQLite's page cache per database (default 8 MiB, SQLite's own): SQLCipher decrypts
pages as they enter it, so a cache that holds the index keeps its queries near plain SQLite's.

Prints, per way: indexing time per 1,000 chunks, query latency p50/p95 (BM25 top 10 and the hits'
text), the database's size, whether a canary word is readable in its files, and the top-10 overlap
with `plain`. `sqlcipher` is skipped with a note if the package is not installed.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmasos.data.search import fts_query
from llmasos.data.search_terms import hashed_query, hashed_terms

CANARY = "quokkazebra"
#: SQLite's page cache per connection (KiB). SQLCipher decrypts a page each time it is read into this
#: cache, where plain SQLite copies it from the OS's: past the cache, SQLCipher pays per query.
CACHE_KIB = 2000 * 4
WORDS_PER_CHUNK = 80


def vocabulary(rng: random.Random, size: int = 20000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(size)}
    return sorted(words)


def chunks(count: int, seed: int = 27) -> tuple[list[str], list[str]]:
    """Synthetic chunks (Zipf-like word frequencies, with plural forms for stemming to matter) and
    the query words."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    texts = []
    for i in range(count):
        words = rng.choices(vocab, weights, k=WORDS_PER_CHUNK)
        words = [w + "s" if rng.random() < 0.1 else w for w in words]
        if i == count // 2:
            words[0] = CANARY
        texts.append(" ".join(words))
    return texts, vocab[200:4000]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Plain:
    name = "plain"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = self.connect(path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self.conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        self.conn.execute(
            "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id', "
            "tokenize='porter unicode61')"
        )

    def connect(self, path: Path):
        return sqlite3.connect(path, isolation_level=None)

    def add(self, texts: list[str]) -> None:
        self.conn.execute("BEGIN")
        for i, text in enumerate(texts, start=1):
            self.conn.execute("INSERT INTO chunks (id, text) VALUES (?, ?)", (i, text))
            self.conn.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (i, text))
        self.conn.execute("COMMIT")

    def search(self, query: str) -> list[tuple[int, str]]:
        sql = (
            "SELECT c.id, c.text FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT 10"
        )
        return [(r[0], r[1]) for r in self.conn.execute(sql, (fts_query(query),))]

    def close(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


class Cipher(Plain):
    name = "sqlcipher"

    def connect(self, path: Path):
        import sqlcipher3.dbapi2 as sqlcipher

        conn = sqlcipher.connect(str(path), isolation_level=None)
        conn.execute(f"PRAGMA key = \"x'{secrets.token_hex(32)}'\"")  # a raw key: no PBKDF2 per open
        return conn


class Hashed(Plain):
    name = "hashed"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self.conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, text TEXT NOT NULL, terms TEXT)")
        self.conn.execute(
            "CREATE VIRTUAL TABLE chunks_fts USING fts5(terms, content='chunks', content_rowid='id', "
            "tokenize='unicode61')"
        )
        self.aead, self.key = AESGCM(AESGCM.generate_key(bit_length=256)), secrets.token_bytes(32)

    def add(self, texts: list[str]) -> None:
        self.conn.execute("BEGIN")
        for i, text in enumerate(texts, start=1):
            nonce = secrets.token_bytes(12)
            sealed = nonce + self.aead.encrypt(nonce, text.encode(), str(i).encode())
            terms = hashed_terms(self.key, text)
            self.conn.execute("INSERT INTO chunks (id, text, terms) VALUES (?, ?, ?)", (i, sealed, terms))
            self.conn.execute("INSERT INTO chunks_fts (rowid, terms) VALUES (?, ?)", (i, terms))
        self.conn.execute("COMMIT")

    def search(self, query: str) -> list[tuple[int, str]]:
        sql = (
            "SELECT c.id, c.text FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT 10"
        )
        rows = self.conn.execute(sql, (hashed_query(self.key, query),))
        return [(r[0], self.aead.decrypt(r[1][:12], r[1][12:], str(r[0]).encode()).decode()) for r in rows]


def measure(way: Plain, texts: list[str], queries: list[str]) -> dict:
    build = timed(lambda: way.add(texts))
    latencies, results = [], []
    for query in queries:
        started = time.perf_counter()
        results.append([i for i, _ in way.search(query)])
        latencies.append(time.perf_counter() - started)
    way.close()
    files = [p for p in way.path.parent.iterdir() if p.name.startswith(way.path.name)]
    readable = any(CANARY.encode() in p.read_bytes() for p in files)
    latencies.sort()
    return {
        "build_s_per_1k": build / len(texts) * 1000,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "mib": sum(p.stat().st_size for p in files) / 2**20,
        "canary_readable": readable,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--cache-mib", type=int, default=8, help="page cache per database (SQLite's default: 8)"
    )
    args = parser.parse_args()
    global CACHE_KIB
    CACHE_KIB = args.cache_mib * 1024
    texts, vocab = chunks(args.chunks)
    rng = random.Random(5)
    queries = [" ".join(rng.sample(vocab, 3)) for _ in range(args.queries)]
    folder = Path(tempfile.mkdtemp(prefix="llmasos-bench-sealed-search-"))
    ways: list[type[Plain]] = [Plain, Hashed]
    try:
        import sqlcipher3  # noqa: F401

        ways.insert(1, Cipher)
    except ImportError:
        print("sqlcipher: skipped (pip install 'sqlcipher3-binary==0.6.0' to measure it)")
    print(
        f"{args.chunks} chunks of {WORDS_PER_CHUNK} words, {args.queries} queries of 3 words, "
        f"page cache {args.cache_mib} MiB"
    )
    header = ("way", "index s/1k", "p50 ms", "p95 ms", "MiB", "canary on disk", "top-10 = plain")
    print(f"{header[0]:<10} {header[1]:>10} {header[2]:>8} {header[3]:>8} {header[4]:>6} ", end="")
    print(f"{header[5]:>15} {header[6]:>15}")
    baseline = None
    for way in ways:
        figures = measure(way(folder / f"{way.name}.db"), texts, queries)
        if baseline is None:
            baseline = figures["results"]
        overlap = statistics.mean(
            len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(figures["results"], baseline, strict=True)
        )
        print(
            f"{way.name:<10} {figures['build_s_per_1k']:>10.3f} {figures['p50_ms']:>8.2f} "
            f"{figures['p95_ms']:>8.2f} {figures['mib']:>6.1f} {figures['canary_readable']!s:>15} "
            f"{overlap:>15.3f}"
        )


if __name__ == "__main__":
    main()
