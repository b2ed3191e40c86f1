"""What ragtune stores and asks of a vector store: the interface its Qdrant stores implement (tasks/kb/store.py
opens one: a server, local mode, or the embedded qdrant-edge store in tasks/kb/edge.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tasks.core.errors import StoreError

Sparse = tuple[list[int], list[float]]  # (indices, values)


@dataclass(frozen=True)
class Point:
    id: str
    vector: list[float]
    payload: dict[str, Any]
    sparse: Sparse | None = None  # BM25 terms (tasks/kb/sparse.py), stored as the named sparse vector "bm25"


@dataclass(frozen=True)
class Fusion:
    """How a hybrid query merges its dense and sparse candidate lists.

    rrf     reciprocal rank fusion: each list adds weight / (k + rank); scores are ignored (Qdrant's Query API)
    dbsf    distribution-based score fusion: each list's scores are normalized by their mean +- 3 standard
            deviations, then summed (no k, no weights) (Qdrant's Query API)
    convex  alpha * dense + (1 - alpha) * sparse, each list's scores standardized (z-scores) over its candidates;
            the engine has no weighted score fusion, so the Retriever fuses the two candidate lists in Python
    """

    method: Literal["rrf", "dbsf", "convex"] = "rrf"
    k: int = 60  # as retrieve.rrf_k
    weights: tuple[float, float] | None = None  # rrf only: (dense, sparse); None = equal
    alpha: float = 0.5  # convex only: the dense list's share, as retrieve.convex_alpha


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
    def ensure_collection(self, fingerprint: dict[str, Any], run_version: str, rebuild: bool = False) -> str | None:
        """Writer: open the serving collection to reconcile against, or, when rebuild_reason() says so, start an
        empty one beside it. Returns that reason (None: this run updates the serving collection's copy)."""
        ...

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
    def commit(self) -> dict:
        """Finish the writes: the embedded store builds HNSW and stages its generation; a rebuild on a server stages
        its new collection. Readers still see the serving index; verify and the recall gate read the staged one."""
        ...

    def publish(self, run_version: str) -> dict:
        """Serve what run_version staged (one atomic switch: a symlink or a Qdrant alias); the serving one becomes
        the previous, kept for rollback. Nothing staged (a server refreshed in place): nothing to do."""
        ...

    def rollback(self, model_key: str) -> dict:
        """Serve the previous index again; the one that served becomes the previous (a second rollback undoes it).
        Refused when the previous index was embedded with another model than model_key, the one queries use."""
        ...

    def close(self) -> None: ...


FINGERPRINT_KEYS = ("dim", "distance", "model", "chunking")  # what the vectors depend on; sparse is checked apart


def check_rollback(previous: str, fingerprint: dict[str, Any], model_key: str) -> None:
    """Queries are embedded with params.yaml's embed.model: an index built with another one must not serve."""
    if fingerprint.get("model", model_key) != model_key:
        raise StoreError(
            f"the previous index {previous} was embedded with embed.model={fingerprint.get('embed_model')}, but "
            "params.yaml embeds queries with another model (or embed.normalize). Set embed.model (and chunk) back to "
            "what it was built with, then run rollback again. Nothing was changed."
        )


def check_staged(found: str | None, run_version: str, where: str) -> None:
    """Verify and the recall gate must read the index this run staged, not a later run's (or none)."""
    if found != run_version:
        raise StoreError(
            f"{where} holds no index staged by this run ({run_version}; found: {found or 'none'}): a later refresh "
            "replaced it. Nothing was published by this run; run the refresh again."
        )


def rebuild_reason(stored: dict[str, Any] | None, wanted: dict[str, Any], rebuild: bool) -> str | None:
    """Why this run must build a new index beside the serving one rather than update a copy of it, or None.

    stored is the serving index's fingerprint (None: no index yet); an index written before fingerprints existed
    records only what its engine config says (dim, distance, sparse)."""
    if stored is None:
        return None
    if rebuild:
        return "--rebuild was asked"
    for key in FINGERPRINT_KEYS:
        if key in stored and stored[key] != wanted[key]:
            return f"{key} changed ({stored[key]} -> {wanted[key]}): every vector is invalid"
    if wanted["sparse"] and not stored.get("sparse"):
        return "index.sparse turned on: the serving index has no BM25 vectors"
    return None
