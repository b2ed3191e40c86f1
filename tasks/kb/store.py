"""The vector-store interface and its Qdrant implementations: a server via QDRANT_URL, qdrant-client local mode
(index.engine=local) here, and the embedded default, qdrant-edge, in tasks/kb/edge.py."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tasks.core.clock import STAMP
from tasks.core.config import IndexParams, resolve_path
from tasks.core.errors import BusyError, StoreError
from tasks.kb.edge import EdgeStore, refuse_legacy_store
from tasks.kb.sparse import VECTOR_NAME as SPARSE
from tasks.kb.vectors import Fusion, Hit, Point, Sparse, VectorStore, check_rollback, check_staged, rebuild_reason

log = logging.getLogger("ragtune")
T = TypeVar("T")


def _distance(name: str):
    from qdrant_client import models

    return {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT, "euclid": models.Distance.EUCLID}[name]


class QdrantStore:
    """One Qdrant collection, read through an alias. Every write waits for acknowledgement and raises on anything
    but COMPLETED.

    Readers use the alias index.collection. A refresh updates the collection behind it in place; a rebuild
    (tasks/kb/vectors.rebuild_reason) writes a new collection `<collection>--<run_version>` beside it, which the
    alias `<collection>--staged` names until the publish stage moves `<collection>` to it in one atomic alias
    update, and `<collection>--previous` to the one it replaced (kept for `ragtune rollback`)."""

    def __init__(self, client, params: IndexParams, location: str, is_server: bool, staged: str | None = None):
        self.client = client
        self.params = params
        self.alias = params.collection
        self.location = location
        self.is_server = is_server
        self.collection = self.alias  # what this store reads: the serving collection, or the staged one
        self.write_name = self.alias  # what the writer writes: the serving collection, or a rebuild's new one
        self._scan_from: str | None = self.alias  # what the writer reconciles against (None: nothing serves yet)
        self._staged: str | None = None
        if staged:  # the collection run `staged` staged, and no other
            found = self._aliases().get(self._named("staged"), "")
            check_staged(self._run_of(found) if found else None, staged, f"Qdrant at {location}")
            self.collection = found

    # --- retries belong to network calls only (a local store either works or is locked)
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one store call; retry what a server or its transport raised, rephrase it, let bugs surface."""
        attempts = self.params.retries + 1 if self.is_server else 1
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except _store_failures() as exc:  # a TypeError or KeyError is a bug here, not the store: it surfaces as is
                transient = _is_transient(exc)
                if attempt == attempts or not transient:
                    raise StoreError(self._failure(what, attempt, exc, transient)) from exc
                delay = self.params.retry_backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "Qdrant %s failed (%s); retry %d/%d in %.1fs", what, _short(exc), attempt, attempts - 1, delay
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _failure(self, what: str, attempts: int, exc: Exception, transient: bool) -> str:
        cause = f"{type(exc).__name__}: {_short(exc)}"
        if not self.is_server:
            fix = "Check the disk and permissions of index.local_path"
        elif transient:
            fix = "Check that the server is up and QDRANT_URL is right"
        else:
            fix = "The server refused the request: check QDRANT_API_KEY and the collection's settings"
        return (
            f"Qdrant at {self.location}: {what} failed after {attempts} attempt(s): {cause}. "
            f"{fix}; the index was not changed by this step."
        )

    # --- the alias and the collections behind it
    def _named(self, suffix: str) -> str:
        """<collection>--staged / --previous (aliases), <collection>--<run_version> (a rebuild's collection)."""
        return f"{self.alias}--{suffix}"

    def _run_of(self, name: str) -> str:
        return name.removeprefix(self._named(""))

    def _aliases(self) -> dict[str, str]:
        got = self._call("get_aliases", lambda: self.client.get_aliases())
        return {a.alias_name: a.collection_name for a in got.aliases}

    def _exists(self, name: str) -> bool:
        return bool(self._call("collection_exists", lambda: self.client.collection_exists(name)))

    def _physical(self, name: str) -> str | None:
        """The collection behind an alias, or the name itself when it is a plain collection, or None."""
        target = self._aliases().get(name)
        return target if target else (name if self._exists(name) else None)

    def _fingerprint(self, name: str) -> dict[str, Any]:
        config = self._call("get_collection", lambda: self.client.get_collection(name)).config
        if (config.metadata or {}).get("ragtune"):
            return dict(config.metadata["ragtune"])
        vectors = config.params.vectors  # a collection written before fingerprints existed
        return {
            "dim": getattr(vectors, "size", None),
            "distance": str(getattr(getattr(vectors, "distance", None), "value", "")).lower(),
            "sparse": SPARSE in (config.params.sparse_vectors or {}),
        }

    def _switch(self, *ops: tuple[str, str | None]) -> None:
        """One atomic alias update: (alias, collection) creates or moves an alias, (alias, None) deletes it."""
        from qdrant_client import models

        aliases = self._aliases()
        change: list[Any] = []
        for alias, target in ops:
            if alias in aliases:
                change.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
            if target is not None:
                change.append(
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
                    )
                )
        if change:
            self._call("update_collection_aliases", lambda: self.client.update_collection_aliases(change))

    def ensure_collection(self, fingerprint: dict[str, Any], run_version: str, rebuild: bool = False) -> str | None:
        """Writer: update the serving collection in place, or create the rebuild's new one beside it."""
        self._drop_unserved()
        serving = self._physical(self.alias)
        reason = rebuild_reason(self._fingerprint(serving) if serving else None, fingerprint, rebuild)
        if serving is not None and reason is None:
            return None
        if serving == self.alias:
            raise StoreError(
                f"collection '{self.alias}' at {self.location} must be rebuilt ({reason}), but it is a plain "
                "collection from an earlier ragtune: a rebuild is built beside the serving collection and switched "
                "by an alias of that name. Set index.collection to a new name for this refresh (it is served "
                "through an alias from then on) and point readers to it; the old collection was not changed."
            )
        new = self._named(run_version)
        self._create(new, fingerprint)
        self.write_name = self._staged = new
        self._scan_from = self.alias if serving else None
        if reason:
            log.info("index: a new collection %s beside %s (%s)", new, serving, reason)
        return reason

    def _create(self, name: str, fingerprint: dict[str, Any]) -> None:
        from qdrant_client import models

        idf = models.SparseVectorParams(modifier=models.Modifier.IDF)  # Qdrant keeps the IDF current as points change
        sparse_config = {SPARSE: idf} if self.params.sparse else None
        self._call(
            "create_collection",
            lambda: self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=fingerprint["dim"], distance=_distance(self.params.distance)),
                sparse_vectors_config=sparse_config,
                hnsw_config=models.HnswConfigDiff(m=self.params.hnsw_m, ef_construct=self.params.hnsw_ef_construct),
                metadata={"ragtune": fingerprint},
            ),
        )
        if self.is_server:  # local mode ignores payload indexes (and warns); a server needs them before loading
            for field in ("doc_id", "source"):
                self._call(
                    "create_payload_index",
                    partial(
                        self.client.create_payload_index,
                        name,
                        field_name=field,
                        field_schema=models.PayloadSchemaType.KEYWORD,
                        wait=True,
                    ),
                )
        dim, distance = fingerprint["dim"], self.params.distance
        log.info("created collection %s (%d-dim, %s) at %s", name, dim, distance, self.location)

    def _drop_unserved(self) -> int:
        """Delete this alias's collections that neither serve, nor are kept for rollback (a failed gate's)."""
        aliases = self._aliases()
        self._switch((self._named("staged"), None))
        keep = {aliases.get(self.alias), aliases.get(self._named("previous"))}
        names = [c.name for c in self._call("get_collections", lambda: self.client.get_collections()).collections]
        ours = re.compile(re.escape(self.alias) + "--" + STAMP)
        dropped = [n for n in names if ours.fullmatch(n) and n not in keep]
        for name in dropped:
            self._call("delete_collection", partial(self.client.delete_collection, name))
        return len(dropped)

    def scan(self, fields: list[str]) -> dict[str, dict[str, Any]]:
        """Every point id with the given payload fields; the store, not a manifest, is the truth."""
        out: dict[str, dict[str, Any]] = {}
        offset = None
        while True:
            if self._scan_from is None:
                return out
            points, offset = self._call(
                "scroll",
                partial(
                    self.client.scroll,
                    self._scan_from,
                    limit=1024,
                    offset=offset,
                    with_payload=fields,
                    with_vectors=False,
                ),
            )
            for p in points:
                out[str(p.id)] = dict(p.payload or {})
            if offset is None:
                return out

    def upsert(self, points: list[Point]) -> None:
        from qdrant_client import models

        structs = [
            models.PointStruct(
                id=p.id,
                payload=p.payload,
                vector=p.vector
                if p.sparse is None
                else {"": p.vector, SPARSE: models.SparseVector(indices=p.sparse[0], values=p.sparse[1])},
            )
            for p in points
        ]
        result = self._call("upsert", lambda: self.client.upsert(self.write_name, points=structs, wait=True))
        _require_completed(result, "upsert", self.location)

    def delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        result = self._call(
            "delete",
            lambda: self.client.delete(
                self.write_name, points_selector=models.PointIdsList(points=list(ids)), wait=True
            ),
        )
        _require_completed(result, "delete", self.location)

    def count(self) -> int:
        return int(self._call("count", lambda: self.client.count(self.collection, exact=True)).count)

    def existing(self, ids: list[str]) -> set[str]:
        got = self._call(
            "retrieve",
            lambda: self.client.retrieve(self.collection, ids=list(ids), with_payload=False, with_vectors=False),
        )
        return {str(p.id) for p in got}

    def query(
        self,
        dense: list[float] | None,
        sparse: Sparse | None,
        limit: int,
        candidates: int,
        fusion: Fusion,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Dense, sparse (BM25 with Qdrant's IDF), or both fused (RRF or DBSF) in one Query API call.
        The threshold applies to the dense similarity (or to the BM25 score when sparse is alone)."""
        from qdrant_client import models

        sparse_q = models.SparseVector(indices=sparse[0], values=sparse[1]) if sparse and sparse[0] else None
        if dense is not None and sparse_q is not None:
            kw = {
                "prefetch": [
                    models.Prefetch(query=dense, limit=candidates, score_threshold=score_threshold),
                    models.Prefetch(query=sparse_q, using=SPARSE, limit=candidates),
                ],
                "query": models.FusionQuery(fusion=models.Fusion.DBSF)
                if fusion.method == "dbsf"
                else models.RrfQuery(
                    rrf=models.Rrf(k=fusion.k, weights=list(fusion.weights) if fusion.weights else None)
                ),
            }
        elif dense is not None:
            kw = {"query": dense, "score_threshold": score_threshold}
        elif sparse_q is not None:
            kw = {"query": sparse_q, "using": SPARSE, "score_threshold": score_threshold}
        else:
            return []  # a sparse query whose words are all stopwords matches nothing
        res = self._call(
            "query", lambda: self.client.query_points(self.collection, limit=limit, with_payload=True, **kw)
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in res.points]

    def has_sparse(self) -> bool:
        name = self._physical(self.collection)
        return name is not None and bool(self._fingerprint(name).get("sparse"))

    def has_collection(self) -> bool:
        return self._physical(self.collection) is not None

    def commit(self) -> dict:
        """Every write was acknowledged: an in-place refresh is already served; a rebuild is staged."""
        if self._staged is None:
            return {"collection": self.write_name, "staged": False}
        self._switch((self._named("staged"), self._staged))
        return {"collection": self._staged, "staged": True}

    def publish(self, run_version: str) -> dict:
        """Move the alias to the staged collection, and `--previous` to the one it replaces; drop older ones."""
        aliases = self._aliases()
        staged, current = aliases.get(self._named("staged")), aliases.get(self.alias)
        if staged is None:
            return {"published": False, "serving": current or self.alias}
        if staged != self._named(run_version):
            raise StoreError(
                f"the staged collection {staged} at {self.location} was not built by this run ({run_version}): a "
                f"later refresh replaced it. Nothing was published; {current} still serves. Run the refresh again."
            )
        self._switch((self.alias, staged), (self._named("previous"), current), (self._named("staged"), None))
        removed = self._drop_unserved()
        log.info("published %s as %s (%d old collection(s) removed)", staged, self.alias, removed)
        return {"published": True, "serving": staged, "previous": current, "generations_removed": removed}

    def rollback(self, model_key: str) -> dict:
        """Swap the alias and `--previous`. On a server the previous collection is the one before the last
        rebuild: in-place refreshes since then are not in it."""
        aliases = self._aliases()
        previous, current = aliases.get(self._named("previous")), aliases.get(self.alias)
        if previous is None or current is None or previous == current:
            raise StoreError(
                f"Qdrant at {self.location} keeps no previous collection for alias '{self.alias}' (one is kept "
                "from the second rebuild on). Nothing was changed."
            )
        check_rollback(previous, self._fingerprint(previous), model_key)
        self._switch((self.alias, previous), (self._named("previous"), current))
        return {"serving": previous, "run_version": self._run_of(previous), "previous": current}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a half-open local store must never mask the real error
            pass


def _require_completed(result, what: str, location: str) -> None:
    from qdrant_client import models

    status = getattr(result, "status", None)
    if status not in (models.UpdateStatus.COMPLETED, "completed"):
        raise StoreError(f"Qdrant at {location}: {what} was not acknowledged (status={status}); the run stops here.")


def _store_failures() -> tuple[type[Exception], ...]:
    """What Qdrant (server, transport or local files) raises when the store, not ragtune, is at fault."""
    from qdrant_client.common.client_exceptions import QdrantException
    from qdrant_client.http.exceptions import ApiException

    return (ApiException, QdrantException, OSError)


def _is_transient(exc: Exception) -> bool:
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, (ResponseHandlingException, OSError))  # OSError covers connection and timeouts


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else repr(exc))[:300]


def open_store(root: Path, params: IndexParams, writer: bool = False, staged: str | None = None) -> VectorStore:
    """QDRANT_URL (+ QDRANT_API_KEY) from the environment selects a server; otherwise the embedded store under
    index.local_path: qdrant-edge (tasks/kb/edge.py) by default, qdrant-client local mode with index.engine=local.
    Only index, publish and rollback open a writer. Readers read the serving index; with staged=<run_version>
    (verify and the recall gate) the index that run staged, or they raise StoreError."""
    from qdrant_client import QdrantClient

    url = os.environ.get("QDRANT_URL", "").strip()
    if url:
        api_key = os.environ.get("QDRANT_API_KEY") or None
        with warnings.catch_warnings():  # said once below, in ragtune's words, and not for a server on this machine
            warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
            client = QdrantClient(url=url, api_key=api_key, timeout=params.timeout_s)
        host = urlsplit(url).hostname or ""
        if api_key and urlsplit(url).scheme == "http" and host not in ("localhost", "127.0.0.1", "::1"):
            log.warning("QDRANT_API_KEY is sent over plain http to %s; use an https:// QDRANT_URL", redact(url))
        return QdrantStore(client, params, redact(url), is_server=True, staged=staged)
    path = resolve_path(root, params.local_path)
    if params.engine == "edge":
        store = EdgeStore(path / params.collection, params, writer, staged)
        if not store.has_collection():
            refuse_legacy_store(root, params)
        return store
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = QdrantClient(path=str(path))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise BusyError(
                f"local Qdrant store {path} is in use by another process (another refresh or a search). "
                "Wait for it to finish and run again, or use a Qdrant server (QDRANT_URL) for concurrent access."
            ) from None
        raise
    return QdrantStore(client, params, str(path), is_server=False, staged=staged)


def redact(url: str) -> str:
    """A URL fit for logs and messages: credentials in its user-info part are dropped."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to `size` items from any iterable (a generator is never held whole)."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
