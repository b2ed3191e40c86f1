"""In-memory stand-ins for the two external systems the knowledge-base logic talks to, for fast unit tests.

They follow tasks/kb/store.VectorStore and tasks/kb/embedder.Embedder. They never replace the real libraries in
flow tests (those run local-mode Qdrant and the packaged MiniLM); they let plan/apply/verify/retrieve be tested in
milliseconds, beside the real-library tests of the same behaviour.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from tasks.kb.vectors import Fusion, Hit, Point, Sparse


class MemoryStore:
    """One collection in a dict: exact cosine search, dot-product BM25 (no IDF), reciprocal-rank fusion."""

    is_server = False

    def __init__(self, sparse: bool = True):
        self.location = "memory"
        self.sparse = sparse
        self.dim: int | None = None
        self.points: dict[str, Point] = {}
        self.writes: list[tuple[str, int]] = []  # ("upsert" | "delete", batch size), in call order
        self.closed = False

    def has_collection(self) -> bool:
        return self.dim is not None

    def has_sparse(self) -> bool:
        return self.sparse

    def ensure_collection(self, fingerprint: dict[str, Any], run_version: str, rebuild: bool = False) -> str | None:
        """Updated in place, always (the real stores' rebuild beside the serving index is tested on them)."""
        if self.dim is not None and self.dim != fingerprint["dim"]:
            raise ValueError(f"collection holds {self.dim}-dim vectors, not {fingerprint['dim']}")
        self.dim = fingerprint["dim"]
        return None

    def scan(self, fields: list[str]) -> dict[str, dict[str, Any]]:
        return {pid: {f: p.payload[f] for f in fields if f in p.payload} for pid, p in self.points.items()}

    def upsert(self, points: list[Point]) -> None:
        self.writes.append(("upsert", len(points)))
        self.points.update({p.id: p for p in points})

    def delete(self, ids: list[str]) -> None:
        self.writes.append(("delete", len(ids)))
        for pid in ids:
            self.points.pop(pid, None)

    def count(self) -> int:
        return len(self.points)

    def existing(self, ids: list[str]) -> set[str]:
        return {pid for pid in ids if pid in self.points}

    def query(
        self,
        dense: list[float] | None,
        sparse: Sparse | None,
        limit: int,
        candidates: int,
        fusion: Fusion,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        ranked = []
        if dense is not None:
            ranked.append(self._rank(lambda p: _cosine(dense, p.vector), candidates, score_threshold))
        if sparse and sparse[0]:
            query = dict(zip(*sparse))
            ranked.append(
                self._rank(
                    lambda p: sum(query.get(i, 0.0) * v for i, v in zip(*(p.sparse or ([], [])))) or None,
                    candidates,
                    None,
                )
            )
        if len(ranked) == 1:
            return ranked[0][:limit]
        fused: dict[str, float] = {}  # RRF, whatever fusion asks for: the fake is for the logic around the store
        for hits, weight in zip(ranked, fusion.weights or (1.0, 1.0)):
            for rank, hit in enumerate(hits):
                fused[hit.id] = fused.get(hit.id, 0.0) + weight / (fusion.k + rank + 1)
        order = sorted(fused, key=lambda pid: -fused[pid])[:limit]
        return [Hit(pid, fused[pid], dict(self.points[pid].payload)) for pid in order]

    def _rank(self, score, candidates: int, threshold: float | None) -> list[Hit]:
        scored = [
            (s, p)
            for p in self.points.values()
            if (s := score(p)) is not None and (threshold is None or s >= threshold)
        ]
        scored.sort(key=lambda sp: -sp[0])
        return [Hit(p.id, float(s), dict(p.payload)) for s, p in scored[:candidates]]

    def commit(self) -> dict:
        return {"staged": False}

    def publish(self, run_version: str) -> dict:
        return {"published": False, "serving": self.location}

    def rollback(self, model_key: str) -> dict:
        raise NotImplementedError("in-memory: no previous index is kept")

    def close(self) -> None:
        self.closed = True


class HashEmbedder:
    """Bag-of-words vectors from hashed lower-case words: texts sharing words are close (no model to load)."""

    name = "hash-bow"
    max_tokens = 512

    def __init__(self, dim: int = 64):
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.strip(".,?!").encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
