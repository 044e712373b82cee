"""A deterministic embedder for data tests: hashed bag of (stemmed-ish) words, unit length, so that
texts sharing words are near and others are not; no model weights needed."""

from __future__ import annotations

import hashlib
import re

import numpy as np

DIM = 1024  # few collisions: texts without a shared word are near orthogonal


class HashingEmbedder:
    def __init__(self, name: str = "hashing-test") -> None:
        self.name = name
        self.dim = DIM
        self.calls = 0
        self.texts_seen = 0

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        self.calls += 1
        self.texts_seen += len(texts)
        vectors, tokens = [], 0
        for text in texts:
            words = re.findall(r"\w+", text.lower())
            tokens += len(words) + 2
            vector = np.zeros(DIM, np.float32)
            for word in words:
                digest = hashlib.blake2b(word[:5].encode(), digest_size=4).digest()
                vector[int.from_bytes(digest, "little") % DIM] += 1.0
            norm = float(np.linalg.norm(vector)) or 1.0
            vectors.append((vector / norm).tolist())
        return vectors, tokens
