"""What ragtune stores and asks of a vector store: the interface its Qdrant stores implement (tasks/kb/store.py
opens one: a server, local mode, or the embedded qdrant-edge store in tasks/kb/edge.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Sparse = tuple[list[int], list[float]]  # (indices, values)


@dataclass(frozen=True)
class Point:
    id: str
    vector: list[float]
    payload: dict[str, Any]
    sparse: Sparse | None = None  # BM25 terms (tasks/kb/sparse.py), stored as the named sparse vector "bm25"


@dataclass(frozen=True)
class Fusion:
    """How a hybrid query merges its dense and sparse candidate lists, inside the engine (Qdrant's Query API).

    rrf   reciprocal rank fusion: each list adds weight / (k + rank); scores are ignored
    dbsf  distribution-based score fusion: each list's scores are normalized by their mean +- 3 standard deviations,
          then summed (no k, no weights)
    """

    method: Literal["rrf", "dbsf"] = "rrf"
    k: int = 60  # as retrieve.rrf_k
    weights: tuple[float, float] | None = None  # rrf only: (dense, sparse); None = equal


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    """Everything ragtune asks of a vector store: one collection, written by reconcile, read by retrieval.
    EdgeStore and QdrantStore are the real ones; tests/fakes.py holds an in-memory one for fast tests of the logic."""

    location: str  # for messages: a path, or a URL without credentials
    is_server: bool  # a server needs payload indexes; the manifest records "qdrant-server" vs the local path

    def has_collection(self) -> bool: ...
    def has_sparse(self) -> bool: ...
    def ensure_collection(self, dim: int) -> None: ...
    def scan(self, fields: list[str]) -> dict[str, dict[str, Any]]: ...
    def upsert(self, points: list[Point]) -> None: ...
    def delete(self, ids: list[str]) -> None: ...
    def count(self) -> int: ...
    def existing(self, ids: list[str]) -> set[str]: ...
    def query(
        self,
        dense: list[float] | None,
        sparse: Sparse | None,
        limit: int,
        candidates: int,
        fusion: Fusion,
        score_threshold: float | None = None,
    ) -> list[Hit]: ...
    def commit(self, on_build: Callable[[], None] | None = None) -> dict:
        """Make the writes visible to readers (the embedded store publishes a generation; a server already has)."""
        ...

    def close(self) -> None: ...
