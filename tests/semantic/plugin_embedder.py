"""A real (tiny) embedder a user could plug in by dotted path: letter-trigram hashing, 32 dims."""

from __future__ import annotations

import hashlib


def trigram_embed(texts: list[str]) -> list[list[float]]:
    out = []
    for text in texts:
        vec = [0.0] * 32
        t = f"  {text.lower()}  "
        for i in range(len(t) - 2):
            vec[hashlib.blake2b(t[i : i + 3].encode(), digest_size=1).digest()[0] % 32] += 1.0
        out.append(vec)
    return out
