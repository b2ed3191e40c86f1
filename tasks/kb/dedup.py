"""Near-duplicate documents: MinHash signatures of word shingles, with LSH to find candidates (datasketch).

Exact copies are caught by the content hash in clean; this catches the same article under other boilerplate or
with small edits. Documents are seen in a fixed order (clean sorts by doc_id) and the first of a group is kept, so a
re-run keeps the same copy, and each drop names it.
"""

from __future__ import annotations

import re
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasketch import MinHash

_WORD = re.compile(r"\w+")
SEED = 1  # the permutations: fixed, so signatures (and so decisions) are the same on every run


def shingles(text: str, k: int) -> set[bytes]:
    """The distinct runs of k consecutive words (lowercased); a text shorter than k words is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) <= k:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)}


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)  # C speed; the MinHash permutations spread it (sha1, the default, is ~4x slower here)


class NearDuplicates:
    """Feed documents in order; each is either new (remembered) or a near-duplicate of one seen before."""

    def __init__(self, threshold: float, num_perm: int = 128, shingle_words: int = 5):
        from datasketch import MinHashLSH  # heavy (0.7 s): only a clean run with the check on pays it

        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        # LSH only proposes candidates and the estimate decides, so its bands aim 0.1 lower and weigh against false
        # negatives (a missed copy stays in the index; an extra candidate costs one comparison): every one of 179 pairs
        # at J 0.80-0.89 was proposed, against 176 with the bands at 0.8. Above ~0.9 datasketch finds no band layout.
        self.lsh = MinHashLSH(threshold=min(threshold - 0.1, 0.9), num_perm=num_perm, weights=(0.1, 0.9))
        self.signatures: dict[str, MinHash] = {}

    def signature(self, text: str) -> MinHash:
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=SEED, hashfunc=_crc32)
        m.update_batch(shingles(text, self.shingle_words))
        return m

    def check(self, doc_id: str, text: str) -> tuple[str, float] | None:
        """(kept doc_id, estimated Jaccard) when `text` is a near-duplicate of a document seen before, else None
        (and the document is remembered). LSH only proposes candidates: the estimate decides."""
        m = self.signature(text)
        scored = [(self.signatures[other].jaccard(m), other) for other in self.lsh.query(m)]
        matches = [(j, other) for j, other in scored if j >= self.threshold]
        if matches:
            j, other = min(matches, key=lambda s: (-s[0], s[1]))  # the closest; ties go to the first doc_id
            return other, j
        self.lsh.insert(doc_id, m)
        self.signatures[doc_id] = m
        return None
