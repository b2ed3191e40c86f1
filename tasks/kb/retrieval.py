"""Retrieval: dense, sparse (BM25) or hybrid (the two fused) search of the index, with the options in `retrieve:`.

One Retriever serves `ragtune search`, `eval-retrieval`, `ask` and `compare`: it opens the store once, loads
the embedding model only when the mode needs it, caches query embeddings (optional) and reranks with a
CrossEncoder (optional).
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

from tasks.core.config import ConfigError, Params
from tasks.core.errors import StoreError
from tasks.core.workspace import Layout
from tasks.kb.embed import EmbeddingCache
from tasks.kb.embedder import Embedder, embed_key, make_embedder, pick_device
from tasks.kb.sparse import encode_query
from tasks.kb.store import open_store
from tasks.kb.vectors import Fusion, Hit, VectorStore

RETRIEVAL_MODES = ("dense", "sparse", "hybrid")


class Retriever:
    """Queries one collection in one mode. The store and embedder default to the configured real ones (tests may
    pass others that follow the same interfaces)."""

    def __init__(
        self,
        root: Path,
        params: Params,
        mode: str | None = None,
        store: VectorStore | None = None,
        embedder: Embedder | None = None,
        staged: str | None = None,  # the run_version whose staged index to read (the recall gate)
    ):
        self.params, self.p = params, params.retrieve
        self.mode = mode or self.p.mode
        if self.mode not in RETRIEVAL_MODES:
            raise ConfigError(f"retrieval mode '{self.mode}': expected one of {', '.join(RETRIEVAL_MODES)}.")
        if self.mode != "dense" and not params.index.sparse:
            raise ConfigError(
                f"retrieve.mode={self.mode} needs BM25 vectors, but index.sparse is false. Set "
                "index.sparse=true and refresh, or use retrieve.mode=dense."
            )
        self._embedder, self._reranker = embedder, None
        self.cache_hits = 0
        weights = (self.p.dense_weight, self.p.sparse_weight)
        self.fusion = Fusion(
            self.p.fusion, self.p.rrf_k, None if weights == (1.0, 1.0) else weights, self.p.convex_alpha
        )
        if self.p.fusion != "rrf" and self.fusion.weights:
            raise ConfigError(
                f"retrieve.dense_weight / sparse_weight weigh RRF only; retrieve.fusion={self.p.fusion} takes none "
                "(convex weighs with retrieve.convex_alpha). Set both to 1.0, or retrieve.fusion=rrf."
            )
        self.store = store if store is not None else open_store(root, params.index, staged=staged)
        try:
            if not self.store.has_collection():
                raise StoreError(
                    f"collection '{params.index.collection}' does not exist at {self.store.location}. "
                    "Run `ragtune refresh` first."
                )
            if self.mode != "dense" and not self.store.has_sparse():
                raise StoreError(
                    f"retrieve.mode={self.mode}: collection '{params.index.collection}' has no BM25 sparse vectors. "
                    "Set index.sparse=true and refresh into a new index.collection, or use retrieve.mode=dense."
                )
        except BaseException:
            self.store.close()
            raise
        self.cache = None
        if self.p.query_cache and self.mode != "sparse":
            self.cache = EmbeddingCache(Layout(root).query_cache)
            self.model_key = embed_key(params.embed)

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc) -> None:
        self.store.close()

    def close(self) -> None:
        self.store.close()

    def _embed(self, query: str) -> list[float]:
        key = hashlib.sha256(query.encode()).hexdigest()
        if self.cache is not None:
            hit = self.cache.get_many(self.model_key, [key]).get(key)
            if hit is not None:
                self.cache_hits += 1
                return hit.tolist()
        vector = self._load_embedder().embed([query])[0]
        if self.cache is not None:
            self.cache.put_many(self.model_key, [(key, vector)])
        return vector.tolist()

    def _load_embedder(self):
        if self._embedder is None:
            self._embedder = make_embedder(self.params.embed)
        return self._embedder

    def warm(self) -> Retriever:
        """Load the models this mode uses now, so that query latencies exclude loading."""
        if self.mode != "sparse":
            self._load_embedder()
        if self.p.rerank_model:
            self._load_reranker()
        return self

    def _load_reranker(self):
        if self._reranker is None:
            from sentence_transformers import CrossEncoder

            try:
                self._reranker = CrossEncoder(self.p.rerank_model, device=pick_device(self.params.embed.device))
            except OSError as exc:
                raise ConfigError(
                    f"retrieve.rerank_model '{self.p.rerank_model}': cannot load it ({exc}). Give a "
                    "local CrossEncoder folder, or set retrieve.rerank_model=null."
                ) from None
        return self._reranker

    def _rerank(self, query: str, hits: list[dict]) -> list[dict]:
        scores = self._load_reranker().predict([(query, h["text"]) for h in hits], show_progress_bar=False)
        for h, s in zip(hits, scores):
            h["retrieval_score"], h["score"] = h["score"], round(float(s), 4)
        return sorted(hits, key=lambda h: -h["score"])

    def search(self, query: str, top_k: int | None = None) -> list[dict]:
        """The best chunks for one query: doc_id, source, path, position, score, text."""
        k = top_k or self.p.top_k
        limit = max(k, self.p.candidates) if self.p.rerank_model else k
        dense = self._embed(query) if self.mode != "sparse" else None
        sparse = encode_query(query) if self.mode != "dense" else None
        if self.mode == "sparse" and sparse is not None and not sparse[0]:
            return []
        candidates = max(self.p.candidates, k)
        if self.mode == "hybrid" and self.fusion.method == "convex":
            by_dense = self.store.query(dense, None, candidates, candidates, self.fusion, self.p.score_threshold)
            by_sparse = self.store.query(None, sparse, candidates, candidates, self.fusion)
            found = convex_fusion(by_dense, by_sparse, self.fusion.alpha)[:limit]
        else:
            found = self.store.query(dense, sparse, limit, candidates, self.fusion, self.p.score_threshold)
        hits = [
            {
                "doc_id": h.payload.get("doc_id"),
                "source": h.payload.get("source"),
                "path": h.payload.get("path"),
                "position": h.payload.get("position"),
                "score": round(h.score, 4),
                "text": h.payload.get("text"),
            }
            for h in found
        ]
        if self.p.rerank_model and hits:
            hits = self._rerank(query, hits)
        return hits[:k]

    def timed_search(self, query: str, top_k: int | None = None) -> tuple[list[dict], float]:
        start = time.perf_counter()
        hits = self.search(query, top_k)
        return hits, (time.perf_counter() - start) * 1000


def standardize(hits: list[Hit]) -> tuple[dict[str, float], float]:
    """(each hit's score as a z-score over its list, the z a hit missing from the list takes). Missing ranks with
    the list's weakest candidate; in a flat list (one hit, or all equal) every hit is 0 and missing is -1."""
    scores = [h.score for h in hits]
    sd = statistics.pstdev(scores) if scores else 0.0
    if sd == 0:
        return {h.id: 0.0 for h in hits}, -1.0
    mean = statistics.fmean(scores)
    z = {h.id: (h.score - mean) / sd for h in hits}
    return z, min(z.values())


def convex_fusion(dense: list[Hit], sparse: list[Hit], alpha: float) -> list[Hit]:
    """alpha * z(dense) + (1 - alpha) * z(sparse), each list's scores standardized over its own candidates, so a
    cosine and a BM25 score weigh alike; a hit missing from a list scores as its weakest candidate there. Ties keep
    the dense order, then the sparse order."""
    (d, d_floor), (s, s_floor) = standardize(dense), standardize(sparse)
    hits = {h.id: h for h in [*sparse, *dense]}  # payloads are the same point's either way
    order = {pid: i for i, pid in enumerate(dict.fromkeys([*(h.id for h in dense), *(h.id for h in sparse)]))}
    fused = {pid: alpha * d.get(pid, d_floor) + (1 - alpha) * s.get(pid, s_floor) for pid in hits}
    ranked = sorted(fused, key=lambda pid: (-fused[pid], order[pid]))
    return [Hit(pid, round(fused[pid], 6), hits[pid].payload) for pid in ranked]


def without_query_cache(params: Params) -> Params:
    """For measurements: every query pays for its own embedding, as a new question would; a warm cache would
    flatter whichever mode or run comes second."""
    return params.model_copy(update={"retrieve": params.retrieve.model_copy(update={"query_cache": False})})


def search_queries(
    root: Path, params: Params, queries: list[str], top_k: int | None, mode: str | None = None
) -> list[dict]:
    """For each query, the top_k chunks."""
    with Retriever(root, params, mode) as r:
        return [{"query": q, "mode": r.mode, "hits": r.search(q, top_k)} for q in queries]
