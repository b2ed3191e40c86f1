"""Query the index with the same embedding model that built it."""

from __future__ import annotations

from pathlib import Path

from tasks.config import Params
from tasks.embedder import SentenceTransformerEmbedder
from tasks.errors import IndexError_
from tasks.vector_store import open_store


def search_queries(root: Path, params: Params, queries: list[str], top_k: int) -> list[dict]:
    """For each query, the top_k chunks: doc_id, source, position, score, text."""
    p = params.embed
    embedder = SentenceTransformerEmbedder(p.model, p.batch_size, p.device, p.normalize)
    store = open_store(root, params.index)
    try:
        if not store.has_collection():
            raise IndexError_(f"collection '{params.index.collection}' does not exist at {store.location}. "
                              "Run `ragtune refresh` first.")
        vectors = embedder.embed(queries)
        results = []
        for q, v in zip(queries, vectors):
            hits = store.search(v.tolist(), top_k)
            results.append({"query": q, "hits": [
                {"doc_id": h.payload.get("doc_id"), "source": h.payload.get("source"),
                 "position": h.payload.get("position"), "score": round(h.score, 4), "text": h.payload.get("text")}
                for h in hits]})
        return results
    finally:
        store.close()
