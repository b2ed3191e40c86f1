"""BM25-style sparse vectors computed locally: no model, no download, deterministic per chunk.

A chunk's vector holds, for each term, BM25's saturated term frequency
    tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / AVG_LENGTH));
Qdrant multiplies in the IDF at query time (sparse vector `modifier=IDF`), so the corpus statistics stay in the
store and an unchanged chunk's vector never needs rewriting when other documents change. AVG_LENGTH is a fixed
typical chunk length (words) rather than the corpus mean for the same reason. A query's vector is 1.0 per
distinct term. Terms are hashed to 32-bit ids.

Product codes and identifiers stay whole ("HX-7734-Q" -> "hx-7734-q") and also add their parts ("hx",
"7734", "q"), so "HX 7734" still matches: exact rare terms are what dense embeddings tend to blur.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from functools import lru_cache

VECTOR_NAME = "bm25"
VERSION = "bm25-v1"  # recorded on every point; a change here makes refresh rewrite the sparse vectors
K1, B, AVG_LENGTH = 1.2, 0.75, 120.0
TOKEN = re.compile(r"[a-z0-9]+(?:[-_./][a-z0-9]+)*")
SEPARATOR = re.compile(r"[-_./]")
STOPWORDS = frozenset(
    """a all an and any are as at be been but by can could did do does for from had has have he her
his how i if in into is it its me my no not of on or our she should so than that the their them then there these
they this to was we were what when where which who why will with would you your""".split()
)


def terms(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords; compound tokens also contribute their parts."""
    out: list[str] = []
    for tok in TOKEN.findall(unicodedata.normalize("NFKC", text).lower()):
        if tok in STOPWORDS:
            continue
        out.append(tok)
        if SEPARATOR.search(tok):
            out += [p for p in SEPARATOR.split(tok) if p not in STOPWORDS]
    return out


@lru_cache(maxsize=1 << 17)  # a corpus reuses a limited vocabulary: hash each word once
def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


def encode_document(text: str) -> tuple[list[int], list[float]]:
    """(indices, values) sorted by index; empty for a text without terms."""
    words = terms(text)
    norm = K1 * (1 - B + B * len(words) / AVG_LENGTH)
    weights: dict[int, float] = {}
    for term, tf in Counter(words).items():
        i = term_id(term)
        weights[i] = weights.get(i, 0.0) + tf * (K1 + 1) / (tf + norm)  # a hash collision adds up, never overwrites
    idx = sorted(weights)
    return idx, [round(weights[i], 6) for i in idx]


def encode_query(text: str) -> tuple[list[int], list[float]]:
    idx = sorted({term_id(t) for t in terms(text)})
    return idx, [1.0] * len(idx)
