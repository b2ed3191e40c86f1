"""Embed: vectors for every chunk, computing only those the content-addressed cache has never seen.

The misses are encoded in this process (`embed_chunks`) or in coarse shards by whatever `map_shards` runs them on
(`embed_chunks_sharded`; the flow passes a Prefect map on a Dask cluster). Either way the parent reads and writes the
cache, and every forward pass sees the same batch of texts, so both give the same vectors.

Memory stays flat with the corpus: chunks stream in, only the misses' texts are held, every new vector goes to the
cache at once, and the matrix is written to its .npy file a block at a time from the cache.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.config import EmbedParams
from tasks.core.errors import RagtuneError
from tasks.core.stage import OnProgress
from tasks.core.workspace import write_npy_rows
from tasks.kb.embedder import Embedder, embed_key, make_embedder


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

    def known(self, model: str, hashes: list[str]) -> set[str]:
        """Which of `hashes` the cache holds a vector for (the vectors stay on disk)."""
        found: set[str] = set()
        with closing(self._connect()) as db:
            for i in range(0, len(hashes), 900):
                part = hashes[i : i + 900]
                marks = ",".join("?" * len(part))
                rows = db.execute(f"SELECT hash FROM emb WHERE model=? AND hash IN ({marks})", [model, *part])
                found.update(h for (h,) in rows)
        return found

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        with closing(self._connect()) as db, db:
            db.executemany(
                "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                [(model, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items],
            )


@dataclass
class EmbedPlan:
    """What a run must compute: the chunks' hashes in order, and the misses (longest-first) with their texts."""

    hashes: list[str]
    missing: list[str]
    texts: dict[str, str]  # the misses' only: cache hits never hold their text or vector here

    def record(self, cache: EmbeddingCache, model_key: str, part: list[str], vectors: np.ndarray) -> None:
        """New vectors for `part` (hashes): into the cache at once, so an interrupted run keeps them."""
        cache.put_many(model_key, list(zip(part, vectors)))
        for h in part:
            del self.texts[h]


@dataclass(frozen=True)
class ShardResult:
    """What a shard task sends back: its vectors (a few MB per 2048 chunks) and where they came from."""

    index: int
    vectors: np.ndarray
    model_key: str  # the worker's model fingerprint: a worker with other model files must not fill the cache
    device: str
    seconds: float


# The misses are sorted longest-first, so the first shards take longest; a few shards per worker let the workers that
# finish early take the rest instead of waiting (one shard per worker ran 69 s vs 49 s on 2028 MiniLM chunks).
SHARDS_PER_WORKER = 4

MapShards = Callable[[list[list[str]]], Iterable[ShardResult]]  # runs encode_shard on each, yields as they finish


# Chunks are looked up in the cache this many at a time while they stream in.
PLAN_WINDOW = 4096


def plan_embedding(chunks: Iterable[dict], cache: EmbeddingCache, model_key: str) -> EmbedPlan:
    """Look every distinct chunk up in the cache as the chunks stream by; the misses are sorted longest-first (a
    stable sort, so ties keep chunk order), which keeps each batch's padding tight."""
    hashes: list[str] = []
    texts: dict[str, str] = {}
    seen: set[str] = set()
    stream = iter(chunks)
    while window := list(itertools.islice(stream, PLAN_WINDOW)):
        fresh = {c["chunk_hash"]: c["text"] for c in window if c["chunk_hash"] not in seen}
        hashes += [c["chunk_hash"] for c in window]
        seen.update(fresh)
        known = cache.known(model_key, list(fresh))
        texts.update((h, t) for h, t in fresh.items() if h not in known)
    missing = sorted(texts, key=lambda h: -len(texts[h]))
    return EmbedPlan(hashes, missing, texts)


def shard_bounds(n: int, shard_size: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of consecutive shards of n items, each `shard_size` rounded up to whole batches: a shard is then
    a run of the very batches the single-process path encodes."""
    size = max(-(-shard_size // batch_size), 1) * batch_size
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def encode_batches(embedder: Embedder, texts: list[str], batch_size: int) -> np.ndarray:
    """One `embed` call per batch, in order. A batch's padding (and, in the last bit, its vectors) depends on which
    texts share it; fixing the batches here, rather than inside the library's own sort, makes them depend only on
    the order of the misses, however those are sliced or sharded."""
    parts = [embedder.embed(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, embedder.dim), np.float32)


def embed_chunks(
    chunks: Iterable[dict],
    make_embedder: Callable[[], Embedder],
    cache: EmbeddingCache,
    model_key: str,
    out: Path,
    on_progress: OnProgress = None,
) -> dict:
    """Vectors aligned with `chunks` into the .npy file `out`, encoded in this process; cache hits are reused.

    The model is loaded only when something is missing, so an unchanged nightly run never pays for it.
    """
    start = time.perf_counter()
    plan = plan_embedding(chunks, cache, model_key)
    embedder = make_embedder() if plan.missing else None
    batch = embedder_batch(embedder) if embedder else 1
    encode_seconds = 0.0
    # Slices keep memory flat, the cache current and the progress bar moving.
    for a, b in shard_bounds(len(plan.missing), max(batch * 16, 256), batch):
        assert embedder is not None  # loaded above whenever something is missing
        part = plan.missing[a:b]
        t0 = time.perf_counter()
        vecs = encode_batches(embedder, [plan.texts[h] for h in part], batch)
        encode_seconds += time.perf_counter() - t0
        plan.record(cache, model_key, part, vecs)
        if on_progress:
            on_progress(b, len(plan.missing))
    if on_progress and not plan.missing:
        on_progress(0, 0)
    device = getattr(embedder, "device", None)
    dim = embedder.dim if embedder else None
    return finish_embedding(plan, cache, model_key, out, dim, device, encode_seconds, 0, start)


def embed_chunks_sharded(
    chunks: Iterable[dict],
    map_shards: MapShards,
    cache: EmbeddingCache,
    model_key: str,
    out: Path,
    batch_size: int,
    shard_size: int,
    workers: int = 1,
    on_progress: OnProgress = None,
) -> dict:
    """Vectors aligned with `chunks` into the .npy file `out`; the misses are encoded in shards of at most
    `shard_size` by `map_shards`, smaller when there are too few misses for SHARDS_PER_WORKER shards per worker.

    Only misses leave this process, and only this process writes the cache (as each shard returns). The vectors
    equal embed_chunks' as long as the workers compute like this process does (same model files, same hardware and
    the same number of torch threads; docs/kb-refresh.md#embedding-on-a-dask-cluster).
    """
    start = time.perf_counter()
    plan = plan_embedding(chunks, cache, model_key)
    size = min(shard_size, -(-len(plan.missing) // (workers * SHARDS_PER_WORKER)))
    bounds = shard_bounds(len(plan.missing), size, batch_size)
    shards = [[plan.texts[h] for h in plan.missing[a:b]] for a, b in bounds]
    if on_progress:
        on_progress(0, len(plan.missing))
    done, dims, devices = 0, set[int](), set[str]()
    t0 = time.perf_counter()
    for result in map_shards(shards) if shards else ():
        a, b = bounds[result.index]
        if result.model_key != model_key:
            raise RagtuneError(
                f"embed: a Dask worker's model files differ from this process's (fingerprint {result.model_key} "
                f"there, {model_key} here). Start the workers from the same environment (the same venv and model "
                "package), or leave embed.dask_address unset."
            )
        if result.vectors.shape[0] != b - a:
            raise RagtuneError(f"embed: shard {result.index} returned {result.vectors.shape[0]} vectors for {b - a}")
        plan.record(cache, model_key, plan.missing[a:b], result.vectors)
        dims.add(int(result.vectors.shape[1]))
        devices.add(result.device)
        done += b - a
        if on_progress:
            on_progress(done, len(plan.missing))
    encode_seconds = time.perf_counter() - t0 if shards else 0.0  # wall time: cluster start and model loads too
    if len(dims) > 1:
        raise RagtuneError(f"embed: the workers returned vectors of different sizes {sorted(dims)}")
    device = ",".join(sorted(devices)) or None
    dim = dims.pop() if dims else None
    return finish_embedding(plan, cache, model_key, out, dim, device, encode_seconds, len(shards), start)


def finish_embedding(
    plan: EmbedPlan,
    cache: EmbeddingCache,
    model_key: str,
    out: Path,
    dim: int | None,
    device: str | None,
    encode_seconds: float,
    shards: int,
    start: float,
) -> dict:
    """Write the matrix in chunk order to `out`, a block at a time from the cache, and return the stage's stats (the
    same for both paths)."""
    hashes = plan.hashes
    if dim is None:  # nothing was encoded: the cached vectors say
        dim = len(cache.get_many(model_key, hashes[:1])[hashes[0]]) if hashes else 0
    write_npy_rows(out, (len(hashes), dim), np.float32, vector_blocks(cache, model_key, hashes, dim))
    stats = {
        "chunks": len(hashes),
        "embedded": len(plan.missing),
        "reused": len(hashes) - len(plan.missing),
        "device": device,
        "dim": dim,
        "shards": shards,
        "encode_seconds": round(encode_seconds, 3),
        "chunks_per_s": round(len(plan.missing) / encode_seconds, 1) if encode_seconds > 0 else None,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return stats


def vector_blocks(cache: EmbeddingCache, model_key: str, hashes: list[str], dim: int) -> Iterator[np.ndarray]:
    """The vectors of `hashes`, in order, PLAN_WINDOW rows at a time, read back from the cache."""
    for i in range(0, len(hashes), PLAN_WINDOW):
        part = hashes[i : i + PLAN_WINDOW]
        found = cache.get_many(model_key, list(dict.fromkeys(part)))
        lost = [h for h in part if h not in found]
        if lost:
            raise RagtuneError(
                f"embed: the embedding cache {cache.path} lost the vector of chunk {lost[0]} during this run "
                "(was it deleted or replaced?); run the embed stage again."
            )
        block = np.stack([found[h] for h in part])
        if block.shape[1:] != (dim,):
            raise ValueError(f"cached vectors have shape {block.shape[1:]}, model gives ({dim},)")
        yield block


def encode_shard(index: int, texts: list[str], params: EmbedParams) -> ShardResult:
    """Encode one shard with this process's model (a Dask worker loads it for its first shard, then reuses it)."""
    embedder = shared_embedder(params)
    t0 = time.perf_counter()
    vectors = encode_batches(embedder, texts, params.batch_size)
    key = embed_key(params)
    return ShardResult(index, vectors, key, embedder.device, round(time.perf_counter() - t0, 3))


@functools.cache
def shared_embedder(params: EmbedParams) -> Embedder:
    """One embedder per process and embed settings."""
    return make_embedder(params)


def embedder_batch(embedder: Embedder) -> int:
    return int(getattr(embedder, "batch_size", 64))
