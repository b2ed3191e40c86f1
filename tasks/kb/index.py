"""Index: reconcile the Qdrant collection with the current chunks, write-before-delete, then verify."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from tasks.core.config import IndexParams
from tasks.core.errors import StoreError, VerifyError
from tasks.core.stage import OnProgress
from tasks.kb.sparse import VERSION, encode_document
from tasks.kb.store import batched
from tasks.kb.vectors import Point, VectorStore

PAYLOAD_FIELDS = ["doc_id", "doc_hash", "vectors"]


def vector_kinds(sparse: bool) -> str:
    """What each point carries, recorded in its payload: turning sparse vectors on rewrites older points."""
    return f"dense+{VERSION}" if sparse else "dense"


@dataclass
class Plan:
    """What a refresh will do, decided before anything is written."""

    added: list[str] = field(default_factory=list)  # doc_ids new to the store
    changed: list[str] = field(default_factory=list)  # content hash differs from the store's
    repaired: list[str] = field(default_factory=list)  # same content, but points missing or extra (drift)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # in the store, gone from the sources
    upsert_ids: list[str] = field(default_factory=list)
    delete_ids: list[str] = field(default_factory=list)
    store_points: int = 0


def plan_reconcile(chunks: Iterable[dict], stored: dict[str, dict], kinds: str = "dense") -> Plan:
    """Pure diff of desired chunks against the store's (point id -> {doc_id, doc_hash, vectors}).

    A document is rewritten whole when its hash changed, or its point set drifted, or its points lack the vector
    kinds this run writes (sparse turned on): re-upserting unchanged chunks costs no embedding (the cache has them).
    """
    desired: dict[str, dict] = {}
    for c in chunks:
        d = desired.setdefault(c["doc_id"], {"hash": c["doc_hash"], "ids": []})
        d["ids"].append(c["point_id"])
    actual: dict[str, dict] = {}
    for pid, payload in stored.items():
        a = actual.setdefault(str(payload.get("doc_id")), {"hashes": set(), "ids": set(), "kinds": set()})
        a["hashes"].add(payload.get("doc_hash"))
        a["ids"].add(pid)
        a["kinds"].add(payload.get("vectors", "dense"))  # points written before sparse vectors existed
    plan = Plan(store_points=len(stored))
    for doc_id in sorted(desired):
        want, have = desired[doc_id], actual.get(doc_id)
        if have is None:
            plan.added.append(doc_id)
        elif have["hashes"] != {want["hash"]}:
            plan.changed.append(doc_id)
        elif have["ids"] != set(want["ids"]) or have["kinds"] != {kinds}:
            plan.repaired.append(doc_id)
        else:
            plan.unchanged.append(doc_id)
            continue
        plan.upsert_ids += want["ids"]
        if have is not None:
            plan.delete_ids += sorted(have["ids"] - set(want["ids"]))
    for doc_id in sorted(set(actual) - set(desired)):
        plan.removed.append(doc_id)
        plan.delete_ids += sorted(actual[doc_id]["ids"])
    return plan


def check_mass_delete(plan: Plan, params: IndexParams, allow: bool, location: str) -> None:
    """Refuse before any write when too much of the index would go (a source that mounted empty, say)."""
    if plan.store_points == 0 or not plan.delete_ids:
        return
    share = len(plan.delete_ids) / plan.store_points
    if share > params.max_delete_share and not allow:
        raise StoreError(
            f"mass-deletion guard: this run would delete {len(plan.delete_ids)} of {plan.store_points} points "
            f"({share:.0%}) from collection '{params.collection}' at {location} ({len(plan.removed)} documents "
            f"vanished, {len(plan.changed)} changed), above index.max_delete_share={params.max_delete_share}. "
            "If the sources really shrank, re-run with --allow-mass-delete; otherwise check ingest.sources "
            "(an empty or unmounted folder). Nothing was written."
        )


def build_points(
    chunks: Iterable[dict], vectors: np.ndarray, ids: set[str], run_version: str, model: str, sparse: bool = False
) -> Iterator[Point]:
    """The points to write, one at a time: a batch at a time is all that is ever held as Python floats."""
    kinds = vector_kinds(sparse)
    for c, v in zip(chunks, vectors):
        if c["point_id"] in ids:
            yield (
                Point(
                    c["point_id"],
                    v.tolist(),
                    {
                        "doc_id": c["doc_id"],
                        "source": c["source"],
                        "path": c["path"],
                        "position": c["position"],
                        "heading_path": c["heading_path"],
                        "text": c["text"],
                        "chunk_hash": c["chunk_hash"],
                        "doc_hash": c["doc_hash"],
                        "run_version": run_version,
                        "model": model,
                        "vectors": kinds,
                    },
                    encode_document(c["text"]) if sparse else None,
                )
            )


def apply_plan(
    store: VectorStore,
    plan: Plan,
    chunks: Iterable[dict],
    vectors: np.ndarray,
    params: IndexParams,
    run_version: str,
    model: str,
    allow_mass_delete: bool = False,
    on_progress: OnProgress = None,
) -> dict:
    """Upsert (acknowledged) first, delete after: a crash in between leaves extra points, never missing ones."""
    check_mass_delete(plan, params, allow_mass_delete, store.location)
    start = time.perf_counter()
    points = build_points(chunks, vectors, set(plan.upsert_ids), run_version, model, params.sparse)
    written = len(set(plan.upsert_ids))
    total = written + len(plan.delete_ids)
    done = 0
    for batch in batched(points, params.batch_size):
        store.upsert(batch)
        done += len(batch)
        if on_progress:
            on_progress(done, total)
    upsert_seconds = time.perf_counter() - start
    for ids in batched(plan.delete_ids, max(params.batch_size, 1024)):
        store.delete(ids)
        done += len(ids)
        if on_progress:
            on_progress(done, total)
    if on_progress and total == 0:
        on_progress(0, 0)
    return {
        "points_written": written,
        "points_deleted": len(plan.delete_ids),
        "upsert_seconds": round(upsert_seconds, 3),
        "points_per_s": round(written / upsert_seconds, 1) if written and upsert_seconds > 0 else None,
    }


def verify_index(store: VectorStore, expected_ids: list[str], sample: int, seed: int = 0) -> dict:
    """The collection holds exactly as many points as the manifest, and a random sample of ids is present."""
    count = store.count()
    if count != len(expected_ids):
        raise VerifyError(
            f"collection at {store.location} holds {count} points but the manifest lists {len(expected_ids)} "
            "chunks. Run the refresh again: it repairs missing and stale points."
        )
    picked = random.Random(seed).sample(expected_ids, min(sample, len(expected_ids)))
    missing = sorted(set(picked) - store.existing(picked)) if picked else []
    if missing:
        raise VerifyError(
            f"{len(missing)} sampled point ids are missing from {store.location} (e.g. {missing[0]}). "
            "Run the refresh again to repair them."
        )
    return {"points": count, "sampled": len(picked), "ok": True}
