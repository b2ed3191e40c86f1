"""The embedded store: a qdrant-edge shard (Qdrant's in-process Rust engine), published in generations.

    <index.local_path>/<collection>/
        current -> gen-000007     the generation readers open (a symlink, swapped atomically)
        gen-000007/               a shard (no WAL: it is written once, flushed, then only read)
        gen-000007.lock           readers hold a shared flock on it while they have the generation open

A refresh never writes a generation anyone reads. Under the collection's index lock it copies the current one
(`cp --reflink=auto --sparse=always`: a clone on btrfs/xfs, a sparse copy elsewhere), applies the plan to the copy,
builds HNSW (`optimize`), flushes, and only then moves `current`. A reader (search, ask, compare, eval-retrieval in
another process) sees the old generation or the new one, never an error or half a write; a killed refresh leaves
an unpublished copy that the next one deletes. Old generations are deleted once no reader holds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge

from tasks.core.config import IndexParams, resolve_path
from tasks.core.errors import BusyError, RagtuneError, StoreError
from tasks.kb.sparse import VECTOR_NAME as SPARSE
from tasks.kb.vectors import Fusion, Hit, Point, Sparse

log = logging.getLogger("ragtune")
T = TypeVar("T")
GEN = re.compile(r"^gen-(\d{6})$")
DISTANCES = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid"}


class EdgeStore:
    """One collection in the embedded engine. open_store() makes a reader; the index stage makes a writer."""

    is_server = False

    def __init__(self, home: Path, params: IndexParams, writer: bool = False):
        self.home = home
        self.params = params
        self.location = str(home)
        self.writer = writer
        self.shard: Any = None
        self.generation: Path | None = None  # the folder self.shard was loaded from
        self._reader_lock: Any = None  # the open lock file of the generation a reader holds
        self._published = False
        if not writer:
            self._open_current()

    # --- the engine raises bare Exceptions: each call is named, and the message says what to do
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (StoreError, TypeError, AttributeError):  # ours, or a bug in this module: surfaces as it is
            raise
        except Exception as exc:  # noqa: BLE001  qdrant_edge has no exception classes of its own
            raise StoreError(
                f"embedded store {self.generation or self.home}: {what} failed: {str(exc).strip()[:300]}. "
                "Check the disk and permissions of index.local_path; a refresh rebuilds a damaged generation "
                "(delete the folder to start over: nothing is re-embedded, vectors come from the embedding cache)."
            ) from exc

    # --- generations
    def _current(self) -> Path | None:
        link = self.home / "current"
        return self.home / os.readlink(link) if link.is_symlink() else None

    def _open_current(self) -> None:
        """Load the published generation under a shared lock, so it is not deleted while this reader has it."""
        for _ in range(10):  # a generation can be published and the old one deleted between readlink and flock
            gen = self._current()
            if gen is None:
                return
            lock = open(gen.with_name(gen.name + ".lock"), "a+")  # noqa: SIM115  held until close()
            fcntl.flock(lock, fcntl.LOCK_SH)
            if (gen / "edge_config.json").exists():
                self._reader_lock, self.generation = lock, gen
                self.shard = self._call("load", partial(qdrant_edge.EdgeShard.load, str(gen)))
                return
            lock.close()
        raise StoreError(f"embedded store {self.home}: 'current' points at a generation that keeps vanishing.")

    def _gens(self) -> list[Path]:
        return sorted(p for p in self.home.glob("gen-*") if GEN.match(p.name) and p.is_dir())

    def _next_generation(self) -> Path:
        numbers = [int(GEN.match(p.name).group(1)) for p in self._gens()]  # type: ignore[union-attr]
        return self.home / f"gen-{max(numbers, default=0) + 1:06d}"

    # --- what VectorStore asks
    def has_collection(self) -> bool:
        return self.shard is not None or self._current() is not None

    def has_sparse(self) -> bool:
        gen = self.generation or self._current()
        return gen is not None and SPARSE in _config(gen).get("sparse_vectors", {})

    def ensure_collection(self, dim: int) -> None:
        """Writer: start the next generation as a copy of the current one (or a new shard)."""
        assert self.writer, "only the index stage writes the embedded store"
        if self.shard is not None:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        self.collect_garbage()  # what a killed refresh left behind
        base, new = self._current(), self._next_generation()
        if base is not None:  # read the published generation until the first write (a no-op refresh copies nothing)
            self._check_config(base, dim)
            self._open_current()
            return
        else:
            self.shard = self._call("create", lambda: qdrant_edge.EdgeShard.create(str(new), self._edge_config(dim)))
            for field in ("doc_id", "source"):  # keyword indexes: filters and facets by document stay cheap
                op = qdrant_edge.UpdateOperation.create_field_index(field, qdrant_edge.PayloadSchemaType.Keyword)
                self._call("create_field_index", partial(self.shard.update, op))
            log.info("created collection %s (%d-dim, %s) at %s", self.params.collection, dim, self.params.distance, new)
        self.generation = new

    def _writable(self) -> Any:
        """The writer's own generation: on the first write, a copy of the published one (readers keep theirs)."""
        if self._reader_lock is not None:
            base, new = self.generation, self._next_generation()
            self._call("close", lambda: self.shard.close())
            copy_tree(base, new)  # type: ignore[arg-type]
            self._reader_lock.close()
            self._reader_lock = None
            self.generation = new
            self.shard = self._call("load", lambda: qdrant_edge.EdgeShard.load(str(new)))
        return self.shard

    def _edge_config(self, dim: int) -> Any:
        q = qdrant_edge
        sparse = {SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)} if self.params.sparse else None
        return q.EdgeConfig(
            vectors=q.EdgeVectorParams(size=dim, distance=getattr(q.Distance, DISTANCES[self.params.distance])),
            sparse_vectors=sparse,
            hnsw_config=q.HnswIndexConfig(
                m=self.params.hnsw_m, ef_construct=self.params.hnsw_ef_construct, full_scan_threshold=10_000
            ),  # full scan below ~10 MB of vectors per segment, as on a server
            wal_enabled=False,  # a generation is flushed before it is published; a crash only loses the copy
        )

    def _check_config(self, gen: Path, dim: int) -> None:
        config = _config(gen)
        dense = config.get("vectors", {}).get("", {})
        want = DISTANCES[self.params.distance]
        if dense.get("size") != dim or dense.get("distance") != want:
            raise StoreError(
                f"collection '{self.params.collection}' at {self.home} holds {dense.get('size')}-dim "
                f"{dense.get('distance')} vectors, but this run makes {dim}-dim {want} vectors (embed.model / "
                "index.distance). Use a new index.collection name, or delete the old collection to rebuild it."
            )
        if self.params.sparse and SPARSE not in config.get("sparse_vectors", {}):
            raise StoreError(
                f"index.sparse: collection '{self.params.collection}' at {self.home} was created without sparse "
                "vectors, so BM25 vectors cannot be added to it. Set index.sparse=false (dense retrieval only), or "
                "use a new index.collection name (a full rebuild from the embedding cache, no re-embedding); the "
                "existing collection was not changed."
            )

    def scan(self, fields: list[str]) -> dict[str, dict[str, Any]]:
        """Every point id with the given payload fields; the store, not a manifest, is the truth."""
        return {str(r.id): dict(r.payload or {}) for batch in self.records(4096, fields, False) for r in batch}

    def records(self, batch: int = 1024, payload: bool | list[str] = True, vectors: bool = True) -> Iterator[list[Any]]:
        """Every point (with its payload fields and vectors, as asked), a scroll page at a time."""
        offset = None
        while self.shard is not None:
            request = qdrant_edge.ScrollRequest(offset=offset, limit=batch, with_payload=payload, with_vector=vectors)
            records, offset = self._call("scroll", partial(self.shard.scroll, request))
            yield records
            if offset is None:
                return

    def upsert(self, points: list[Point]) -> None:
        q = qdrant_edge
        structs = [
            q.Point(
                p.id,
                p.vector if p.sparse is None else {"": p.vector, SPARSE: q.SparseVector(p.sparse[0], p.sparse[1])},
                p.payload,
            )
            for p in points
        ]
        shard = self._writable()
        self._call("upsert", lambda: shard.update(q.UpdateOperation.upsert_points(structs)))

    def delete(self, ids: list[str]) -> None:
        shard = self._writable()
        self._call("delete", lambda: shard.update(qdrant_edge.UpdateOperation.delete_points(list(ids))))

    def count(self) -> int:
        if self.shard is None:
            return 0
        return int(self._call("count", lambda: self.shard.count(qdrant_edge.CountRequest(exact=True))))

    def existing(self, ids: list[str]) -> set[str]:
        if self.shard is None or not ids:
            return set()
        got = self._call("retrieve", lambda: self.shard.retrieve(list(ids), with_payload=False, with_vector=False))
        return {str(r.id) for r in got}

    def query(
        self,
        dense: list[float] | None,
        sparse: Sparse | None,
        limit: int,
        candidates: int,
        fusion: Fusion,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Dense, sparse (BM25 with the engine's IDF), or both fused inside the engine (RRF or DBSF)."""
        if self.shard is None:
            return []
        q = qdrant_edge
        sparse_q = q.Query.Nearest(q.SparseVector(sparse[0], sparse[1]), using=SPARSE) if sparse and sparse[0] else None
        dense_q = q.Query.Nearest(dense) if dense is not None else None
        if dense_q is not None and sparse_q is not None:
            request = q.QueryRequest(
                limit=limit,
                prefetches=[
                    q.Prefetch(limit=candidates, query=dense_q, score_threshold=score_threshold),
                    q.Prefetch(limit=candidates, query=sparse_q),
                ],
                query=edge_fusion(fusion),
                with_payload=True,
            )
        elif dense_q is not None or sparse_q is not None:
            request = q.QueryRequest(
                limit=limit, query=dense_q or sparse_q, with_payload=True, score_threshold=score_threshold
            )
        else:
            return []  # a sparse query whose words are all stopwords matches nothing
        points = self._call("query", lambda: self.shard.query(request))
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    # --- the writer's end: publish (commit) or throw the copy away (close without commit)
    def commit(self, on_build: Callable[[], None] | None = None) -> dict:
        """Build HNSW where a segment passed the indexing threshold, flush, then make this generation current."""
        assert self.writer and self.generation is not None
        if self._reader_lock is not None:  # nothing was written: the published generation stays as it is
            return {"generation": self.generation.name, "hnsw_built": False, "hnsw_seconds": 0.0}
        start = time.perf_counter()
        built = bool(self._call("optimize", lambda: self.shard.optimize()))  # blocks; releases the GIL
        build_seconds = time.perf_counter() - start
        if on_build:
            on_build()
        self._call("flush", lambda: self.shard.flush())
        self._call("close", lambda: self.shard.close())
        self.shard = None
        _fsync_tree(self.generation)
        tmp = self.home / "current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.generation.name)
        os.replace(tmp, self.home / "current")  # the one atomic step readers can observe
        _fsync_dir(self.home)
        self._published = True
        removed = self.collect_garbage()
        log.info(
            "published %s (optimize %.1fs, %d old generation(s) removed)", self.generation.name, build_seconds, removed
        )
        return {"generation": self.generation.name, "hnsw_built": built, "hnsw_seconds": round(build_seconds, 3)}

    def collect_garbage(self) -> int:
        """Delete every generation but the current one that no reader holds (a busy one waits for the next run)."""
        current, removed = self._current(), 0
        for gen in self._gens():
            if gen == current or (self.writer and gen == self.generation and not self._published):
                continue
            with open(gen.with_name(gen.name + ".lock"), "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a reader still has it open
                shutil.rmtree(gen, ignore_errors=True)
                gen.with_name(gen.name + ".lock").unlink(missing_ok=True)
                removed += 1
        for lock_file in self.home.glob("gen-*.lock"):  # locks a late reader created for a deleted generation
            if not lock_file.with_suffix("").exists():
                lock_file.unlink(missing_ok=True)
        return removed

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing must never mask the real error
            if self.shard is not None:
                self.shard.close()
        self.shard = None
        if self.writer and not self._published and self._reader_lock is None and self.generation is not None:
            shutil.rmtree(self.generation, ignore_errors=True)  # an unpublished copy is only scratch
        if self._reader_lock is not None:
            self._reader_lock.close()  # releases the shared lock
            self._reader_lock = None

    def disk_bytes(self) -> int:
        """Bytes the current generation really occupies (its mmap files are sparse)."""
        gen = self._current()
        return sum(f.stat().st_blocks * 512 for f in gen.rglob("*") if f.is_file()) if gen else 0


def _config(gen: Path) -> dict:
    try:
        return json.loads((gen / "edge_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"embedded store generation {gen} has no readable edge_config.json ({exc}).") from exc


def copy_tree(src: Path, dst: Path) -> None:
    """A clone where the filesystem can (reflink), else a copy that keeps the engine's sparse files sparse."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        subprocess.run(
            ["cp", "-a", "--reflink=auto", "--sparse=always", str(src), str(tmp)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):  # not GNU cp (macOS): a plain copy, larger on disk
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, symlinks=True)
    os.replace(tmp, dst)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """The engine flushed its files; fsync makes the generation durable before `current` names it."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def legacy_store(root: Path, params: IndexParams) -> Path | None:
    """A qdrant-client local-mode store (ragtune's embedded store before qdrant-edge) holding this collection."""
    for path in (resolve_path(root, params.local_path), root / "data/qdrant"):
        if (path / "meta.json").is_file() and (path / "collection" / params.collection).is_dir():
            return path
    return None


def refuse_legacy_store(root: Path, params: IndexParams) -> None:
    legacy = legacy_store(root, params)
    if legacy is not None:
        raise RagtuneError(
            f"collection '{params.collection}' is in {legacy}, a qdrant-client local-mode store written by an "
            "earlier ragtune; the embedded store is now qdrant-edge. Run `ragtune migrate-index` once: it copies "
            "the stored vectors into the new store (nothing is re-embedded) and keeps the old folder. "
            "Or set index.engine: local to keep using the old store."
        )


def edge_fusion(fusion: Fusion) -> Any:
    if fusion.method == "dbsf":
        return qdrant_edge.Fusion.Dbsf()
    weights = list(fusion.weights) if fusion.weights else None
    return qdrant_edge.Fusion.Rrf(k=fusion.k, weights=weights)


def migrate_local_mode(root: Path, params: IndexParams, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Copy a qdrant-client local-mode collection (ragtune's embedded store before qdrant-edge) into a new
    generation: ids, payloads, dense and sparse vectors as stored, so nothing is re-embedded. The old folder stays."""
    from qdrant_client import QdrantClient

    src = legacy_store(root, params)
    if src is None:
        raise RagtuneError(
            f"no qdrant-client local-mode store holding collection '{params.collection}' was found in "
            f"{params.local_path} or data/qdrant: there is nothing to migrate. A refresh builds the embedded store."
        )
    writer = EdgeStore(resolve_path(root, params.local_path) / params.collection, params, writer=True)
    if writer.has_collection():
        raise RagtuneError(
            f"the embedded store {writer.home} already holds collection '{params.collection}'; nothing was "
            "changed. Delete that folder first to migrate again."
        )
    try:
        client = QdrantClient(path=str(src))
    except RuntimeError as exc:  # local mode's own process lock
        raise BusyError(f"{src} is in use by another process ({exc}); run again when it has finished.") from None
    try:
        config = client.get_collection(params.collection).config.params
        dim = int(config.vectors.size)
        total = client.count(params.collection, exact=True).count
        writer.ensure_collection(dim)
        done, offset = 0, None
        while True:
            records, offset = client.scroll(
                params.collection, limit=params.batch_size, offset=offset, with_payload=True, with_vectors=True
            )
            writer.upsert([_point(r) for r in records])
            done += len(records)
            if on_progress:
                on_progress(done, total)
            if offset is None:
                break
        if total == 0:  # an empty collection still becomes a (published, empty) generation
            writer._writable()
        published = writer.commit()
    finally:
        client.close()
        writer.close()
    return {"from": str(src), "to": str(writer.home), "points": done, "dim": dim, **published}


def _point(record: Any) -> Point:
    vectors = record.vector if isinstance(record.vector, dict) else {"": record.vector}
    sparse = vectors.get(SPARSE)
    return Point(
        str(record.id),
        list(vectors[""]),
        dict(record.payload or {}),
        (list(sparse.indices), list(sparse.values)) if sparse is not None else None,
    )
