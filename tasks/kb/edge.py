"""The embedded store: a qdrant-edge shard (Qdrant's in-process Rust engine), published in generations.

    <index.local_path>/<collection>/
        current -> gen-000008     the generation readers open (a symlink, swapped atomically)
        previous -> gen-000007    the one it replaced, kept for `ragtune rollback`
        staged -> gen-000009      built and flushed, not served yet: verify and the recall gate read it
        gen-000008/               a shard (no WAL: it is written once, flushed, then only read) + ragtune.json
        gen-000008.lock           readers hold a shared flock on it while they have the generation open

A refresh never writes a generation anyone reads. Under the collection's index lock it copies the current one
(`cp --reflink=auto --sparse=always`: a clone on btrfs/xfs, a sparse copy elsewhere), or starts an empty one when
the vectors are invalid (tasks/kb/vectors.rebuild_reason), applies the plan, builds HNSW (`optimize`), flushes and
stages it. Only the publish stage, after verify and the recall gate passed on the staged generation, moves
`current`. A reader (search, ask, compare, eval-retrieval in another process) sees the old generation or the new
one, never an error or half a write; a failed gate or a killed refresh leaves an unserved generation that the next
refresh deletes. Generations no pointer names are deleted once no reader holds them.
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
from tasks.kb.vectors import Fusion, Hit, Point, Sparse, check_rollback, check_staged, rebuild_reason

log = logging.getLogger("ragtune")
T = TypeVar("T")
GEN = re.compile(r"^gen-(\d{6})$")
META = "ragtune.json"
POINTERS = ("current", "previous", "staged")
DISTANCES = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid"}


class EdgeStore:
    """One collection in the embedded engine. open_store() makes a reader (of the serving generation, or of the
    staged one for verify and the gate); the index, publish and rollback steps make a writer."""

    is_server = False

    def __init__(self, home: Path, params: IndexParams, writer: bool = False, staged: str | None = None):
        self.home = home
        self.params = params
        self.location = str(home)
        self.writer = writer
        self.shard: Any = None
        self.generation: Path | None = None  # the folder self.shard was loaded from
        self._reader_lock: Any = None  # the open lock file of the generation a reader holds
        self._new: dict[str, Any] | None = None  # writer: the fingerprint of an empty generation to start (rebuild)
        self._meta: dict[str, Any] = {}  # writer: ragtune.json of the generation it stages
        self._staged = False
        if not writer and staged:  # the index run `staged` staged, and no other
            self._open("staged")
            check_staged(_meta(self.generation).get("run_version") if self.generation else None, staged, str(home))
        elif not writer:
            self._open("current")

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

    # --- generations and the pointers that name them
    def _pointer(self, name: str) -> Path | None:
        link = self.home / name
        return self.home / os.readlink(link) if link.is_symlink() else None

    def _point(self, name: str, gen: Path) -> None:
        """Make pointer `name` name gen: one rename, atomic for readers."""
        tmp = self.home / f"{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(gen.name)
        os.replace(tmp, self.home / name)

    def _open(self, pointer: str) -> None:
        """Load a generation under a shared lock, so it is not deleted while this reader has it."""
        for _ in range(10):  # a generation can be published and the old one deleted between readlink and flock
            gen = self._pointer(pointer)
            if gen is None:
                return
            lock = open(gen.with_name(gen.name + ".lock"), "a+")  # noqa: SIM115  held until close()
            fcntl.flock(lock, fcntl.LOCK_SH)
            if self._pointer(pointer) == gen and (gen / "edge_config.json").exists():  # still named, so complete
                self._reader_lock, self.generation = lock, gen
                self.shard = self._call("load", partial(qdrant_edge.EdgeShard.load, str(gen)))
                return
            lock.close()
        raise StoreError(f"embedded store {self.home}: '{pointer}' points at a generation that keeps vanishing.")

    def _gens(self) -> list[Path]:
        return sorted(p for p in self.home.glob("gen-*") if GEN.match(p.name) and p.is_dir())

    def _next_generation(self) -> Path:
        numbers = [int(GEN.match(p.name).group(1)) for p in self._gens()]  # type: ignore[union-attr]
        return self.home / f"gen-{max(numbers, default=0) + 1:06d}"

    # --- what VectorStore asks
    def has_collection(self) -> bool:
        return self.shard is not None or self._pointer("current") is not None

    def has_sparse(self) -> bool:
        gen = self.generation or self._pointer("current")
        return gen is not None and SPARSE in _config(gen).get("sparse_vectors", {})

    def ensure_collection(self, fingerprint: dict[str, Any], run_version: str, rebuild: bool = False) -> str | None:
        """Writer: read the serving generation until the first write, which copies it (a no-op refresh copies
        nothing) or, when the vectors are invalid, starts an empty generation beside it."""
        assert self.writer, "only the index stage writes the embedded store"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "staged").unlink(missing_ok=True)  # a generation a failed gate or a killed run left unserved
        self.collect_garbage()
        self._meta = {"run_version": run_version, "fingerprint": fingerprint}
        base = self._pointer("current")
        reason = rebuild_reason(_fingerprint(base) if base else None, fingerprint, rebuild)
        if base is None or reason:
            self._new = fingerprint
        if base is not None:
            self._open("current")
        if reason:
            log.info("index: a new generation beside %s (%s)", base.name if base else "-", reason)
        return reason

    def _writable(self) -> Any:
        """The writer's own generation, made on the first write: a copy of the serving one, or a new empty shard."""
        if self._new is None and self._reader_lock is None:
            return self.shard
        base, new = self.generation, self._next_generation()
        if self.shard is not None:
            self._call("close", lambda: self.shard.close())
        if self._new is not None:
            dim = self._new["dim"]
            self.shard = self._call("create", lambda: qdrant_edge.EdgeShard.create(str(new), self._edge_config(dim)))
            for field in ("doc_id", "source"):  # keyword indexes: filters and facets by document stay cheap
                op = qdrant_edge.UpdateOperation.create_field_index(field, qdrant_edge.PayloadSchemaType.Keyword)
                self._call("create_field_index", partial(self.shard.update, op))
            self._new = None
        else:
            copy_tree(base, new)  # type: ignore[arg-type]
            self.shard = self._call("load", lambda: qdrant_edge.EdgeShard.load(str(new)))
        if self._reader_lock is not None:
            self._reader_lock.close()
            self._reader_lock = None
        self.generation = new
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
            wal_enabled=False,  # a generation is flushed before it is staged; a crash only loses the copy
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

    # --- the writer's end: stage (commit) or throw the copy away (close without commit); then publish or roll back
    def commit(self) -> dict:
        """Build HNSW where a segment passed the indexing threshold, flush, then stage this generation."""
        assert self.writer
        if self.generation is None or self._reader_lock is not None:  # nothing written: the serving one stays
            name = self.generation.name if self.generation else None
            return {"generation": name, "staged": False, "hnsw_built": False, "hnsw_seconds": 0.0}
        start = time.perf_counter()
        built = bool(self._call("optimize", lambda: self.shard.optimize()))  # blocks; releases the GIL
        build_seconds = time.perf_counter() - start
        self._call("flush", lambda: self.shard.flush())
        self._call("close", lambda: self.shard.close())
        self.shard = None
        (self.generation / META).write_text(json.dumps(self._meta, indent=1))
        _fsync_tree(self.generation)
        self._point("staged", self.generation)
        _fsync_dir(self.home)
        self._staged = True
        log.info("staged %s (optimize %.1fs)", self.generation.name, build_seconds)
        return {
            "generation": self.generation.name,
            "staged": True,
            "hnsw_built": built,
            "hnsw_seconds": round(build_seconds, 3),
        }

    def publish(self, run_version: str) -> dict:
        """Move `current` to the staged generation; the one it replaces becomes `previous`."""
        assert self.writer, "publish runs under the index lock"
        staged, current = self._pointer("staged"), self._pointer("current")
        if staged is None:
            return {"published": False, "serving": current.name if current else None}
        staged_by = _meta(staged).get("run_version")
        if staged_by != run_version:
            serving = current.name if current else "nothing"
            raise StoreError(
                f"the staged generation {staged.name} at {self.home} was built by run {staged_by}, not by this run "
                f"({run_version}): a later refresh replaced this run's. Nothing was published; {serving} still "
                "serves. Run the refresh again."
            )
        if current is not None and current != staged:
            self._point("previous", current)
        self._point("current", staged)
        (self.home / "staged").unlink()
        _fsync_dir(self.home)
        removed = self.collect_garbage()
        log.info("published %s (%d old generation(s) removed)", staged.name, removed)
        return {
            "published": True,
            "serving": staged.name,
            "previous": current.name if current else None,
            "generations_removed": removed,
        }

    def rollback(self, model_key: str) -> dict:
        """Swap `current` and `previous`."""
        assert self.writer, "rollback runs under the index lock"
        previous, current = self._pointer("previous"), self._pointer("current")
        if previous is None or current is None or previous == current or not previous.is_dir():
            raise StoreError(
                f"embedded store {self.home} keeps no previous generation to roll back to (a generation is kept "
                "from the second published refresh on). Nothing was changed."
            )
        check_rollback(previous.name, _fingerprint(previous), model_key)
        self._point("current", previous)
        self._point("previous", current)
        _fsync_dir(self.home)
        return {"serving": previous.name, "run_version": _meta(previous).get("run_version"), "previous": current.name}

    def collect_garbage(self) -> int:
        """Delete every generation no pointer names and no reader holds (a busy one waits for the next run)."""
        keep = {self._pointer(name) for name in POINTERS}
        if self.writer and self.generation is not None and not self._staged:
            keep.add(self.generation)  # the writer's own, being written
        removed = 0
        for gen in self._gens():
            if gen in keep:
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
        if self.writer and not self._staged and self._reader_lock is None and self.generation is not None:
            shutil.rmtree(self.generation, ignore_errors=True)  # an unstaged copy is only scratch
        if self._reader_lock is not None:
            self._reader_lock.close()  # releases the shared lock
            self._reader_lock = None

    def disk_bytes(self) -> int:
        """Bytes the current generation really occupies (its mmap files are sparse)."""
        gen = self._pointer("current")
        return sum(f.stat().st_blocks * 512 for f in gen.rglob("*") if f.is_file()) if gen else 0


def _meta(gen: Path) -> dict:
    """ragtune.json: the run that built the generation and the fingerprint of its vectors (older ones have none)."""
    try:
        return json.loads((gen / META).read_text())
    except (OSError, ValueError):
        return {}


def _fingerprint(gen: Path) -> dict[str, Any]:
    """What the generation's vectors depend on: its ragtune.json, or what its engine config says."""
    if "fingerprint" in _meta(gen):
        return _meta(gen)["fingerprint"]
    dense = _config(gen).get("vectors", {}).get("", {})
    distance = {v: k for k, v in DISTANCES.items()}.get(dense.get("distance"), dense.get("distance"))
    return {"dim": dense.get("size"), "distance": distance, "sparse": SPARSE in _config(gen).get("sparse_vectors", {})}


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
        sparse = SPARSE in (config.sparse_vectors or {})
        run_version = "migrated"  # the generation's ragtune.json names it so; points keep their own run_version
        writer.ensure_collection({"dim": dim, "distance": params.distance, "sparse": sparse}, run_version)
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
        published = {**writer.commit(), **writer.publish(run_version)}
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
