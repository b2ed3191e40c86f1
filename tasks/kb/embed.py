"""Embed: vectors for every chunk, computing only those the content-addressed cache has never seen."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np

from tasks.core.stage import OnProgress
from tasks.kb.embedder import Embedder


class EmbeddingCache:
    """SQLite map (model fingerprint, chunk sha256) -> float32 vector; safe to share between runs."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS emb (model TEXT, hash TEXT, vec BLOB, "
                "PRIMARY KEY (model, hash)) WITHOUT ROWID"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get_many(self, model: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with closing(self._connect()) as db:
            for i in range(0, len(hashes), 900):  # SQLite caps bound parameters per statement
                part = hashes[i : i + 900]
                marks = ",".join("?" * len(part))
                for h, blob in db.execute(
                    f"SELECT hash, vec FROM emb WHERE model=? AND hash IN ({marks})", [model, *part]
                ):
                    found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        with closing(self._connect()) as db, db:
            db.executemany(
                "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                [(model, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items],
            )


def embed_chunks(
    chunks: list[dict],
    make_embedder: Callable[[], Embedder],
    cache: EmbeddingCache,
    model_key: str,
    on_progress: OnProgress = None,
) -> tuple[np.ndarray, dict]:
    """Vectors aligned with `chunks`; cache hits are reused, misses encoded longest-first in slices.

    The model is loaded only when something is missing, so an unchanged nightly run never pays for it.
    """
    start = time.perf_counter()
    hashes = [c["chunk_hash"] for c in chunks]
    unique = list(dict.fromkeys(hashes))
    cached = cache.get_many(model_key, unique)
    text_by_hash = {c["chunk_hash"]: c["text"] for c in chunks}
    missing = sorted((h for h in unique if h not in cached), key=lambda h: -len(text_by_hash[h]))
    encode_seconds = 0.0
    embedder = make_embedder() if missing else None
    # Slices keep memory flat and drive the progress bar; longest-first keeps sentence-transformers' batches tight.
    step = max(embedder_batch(embedder) * 16, 256) if embedder else 256
    done = 0
    for i in range(0, len(missing), step):
        assert embedder is not None  # loaded above whenever something is missing
        part = missing[i : i + step]
        t0 = time.perf_counter()
        vecs = embedder.embed([text_by_hash[h] for h in part])
        encode_seconds += time.perf_counter() - t0
        cache.put_many(model_key, list(zip(part, vecs)))
        cached.update(zip(part, vecs))
        done += len(part)
        if on_progress:
            on_progress(done, len(missing))
    if on_progress and not missing:
        on_progress(0, 0)
    dim = embedder.dim if embedder else (len(next(iter(cached.values()))) if cached else 0)
    matrix = np.stack([cached[h] for h in hashes]).astype(np.float32) if hashes else np.zeros((0, dim), np.float32)
    if matrix.shape[1:] != (dim,):
        raise ValueError(f"cached vectors have shape {matrix.shape[1:]}, model gives ({dim},)")
    stats = {
        "chunks": len(chunks),
        "embedded": len(missing),
        "reused": len(chunks) - len(missing),
        "device": getattr(embedder, "device", None),
        "dim": dim,
        "encode_seconds": round(encode_seconds, 3),
        "chunks_per_s": round(len(missing) / encode_seconds, 1) if encode_seconds > 0 else None,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return matrix, stats


def embedder_batch(embedder: Embedder) -> int:
    return int(getattr(embedder, "batch_size", 64))
