"""The embedded store (qdrant-edge, real engine): generations, what readers see, and the same answers as local mode."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from tasks.core.config import IndexParams
from tasks.core.errors import RagtuneError, StoreError
from tasks.kb.edge import EdgeStore, migrate_local_mode
from tasks.kb.sparse import encode_document, encode_query
from tasks.kb.store import QdrantStore, open_store
from tasks.kb.vectors import Fusion, Point

DIM = 16
WORDS = [f"term{i}" for i in range(60)]


def points(n: int, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=4 + i))  # unique lengths: no two BM25 scores tie
        vec = rng.normal(size=DIM)
        out.append(
            Point(
                str(uuid.UUID(int=i + 1)),
                (vec / np.linalg.norm(vec)).tolist(),
                {"doc_id": f"d{i // 3}", "doc_hash": "h", "text": text},
                encode_document(text),
            )
        )
    return out


def fingerprint(dim: int = DIM, sparse: bool = True) -> dict:
    return {"dim": dim, "distance": "cosine", "sparse": sparse, "model": "m", "chunking": "c"}


def begin(home: Path, run: str = "r1", fp: dict | None = None, rebuild: bool = False, **kw):
    """A writer, and the reason it builds a new generation instead of a copy (None: a copy)."""
    store = EdgeStore(home, IndexParams(**kw), writer=True)
    return store, store.ensure_collection(fp or fingerprint(sparse=kw.get("sparse", True)), run, rebuild)


def writer(home: Path, run: str = "r1", fp: dict | None = None, rebuild: bool = False, **kw) -> EdgeStore:
    return begin(home, run, fp, rebuild, **kw)[0]


def published(home: Path, batch: list[Point], run: str = "r1", **kw) -> None:
    store = writer(home, run, **kw)
    store.upsert(batch)
    store.commit()
    store.publish(run)
    store.close()


def count(home: Path, staged: str | None = None) -> int:
    reader = EdgeStore(home, IndexParams(), staged=staged)
    try:
        return reader.count()
    finally:
        reader.close()


def test_readers_see_the_published_generation_only(tmp_path):
    home = tmp_path / "ragtune"
    published(home, points(30))
    reader = EdgeStore(home, IndexParams())
    w = writer(home, "r2")
    w.delete([p.id for p in points(30)[:10]])
    assert reader.count() == 30 and count(home) == 30  # not even staged yet
    w.commit()
    assert count(home) == 30 and count(home, staged="r2") == 20, "staged: verify and the gate read it, not readers"
    with pytest.raises(StoreError, match=r"no index staged by this run \(r9; found: r2\): a later refresh replaced"):
        count(home, staged="r9")
    w.publish("r2")
    w.close()
    assert reader.count() == 30, "a reader keeps the generation it opened"
    assert count(home) == 20
    assert (home / reader.generation.name).is_dir()  # type: ignore[union-attr]  held, so not deleted
    reader.close()
    writer(home, "r3").close()  # the next writer removes what no pointer names and no reader holds
    kept = {p.name for p in home.glob("gen-*") if p.is_dir()}
    assert kept == {os.readlink(home / "current"), os.readlink(home / "previous")}


def test_a_writer_that_writes_nothing_stages_nothing_and_an_uncommitted_one_leaves_nothing(tmp_path):
    home = tmp_path / "ragtune"
    published(home, points(5))
    current = os.readlink(home / "current")
    w = writer(home, "r2")
    assert w.scan(["doc_id"]).keys() == {p.id for p in points(5)}
    assert w.commit() == {"generation": current, "staged": False, "hnsw_built": False, "hnsw_seconds": 0.0}
    assert w.publish("r2") == {"published": False, "serving": current}
    w.close()
    w = writer(home, "r3")
    w.upsert(points(8))
    w.close()  # killed or failed before commit: the copy is scratch
    assert os.readlink(home / "current") == current
    assert sorted(p.name for p in home.iterdir()) == ["current", current, f"{current}.lock"]


def test_invalid_vectors_are_rebuilt_beside_the_serving_generation_which_rollback_restores(tmp_path):
    home = tmp_path / "ragtune"
    published(home, points(3))
    w, reason = begin(home, "r2", fingerprint(dim=8))
    assert reason == "dim changed (16 -> 8): every vector is invalid"
    assert w.scan(["doc_id"]).keys() == {p.id for p in points(3)}, "the plan is made against the serving index"
    w.upsert([Point(p.id, p.vector[:8], p.payload) for p in points(5)])
    w.commit()
    assert count(home) == 3 and count(home, staged="r2") == 5
    w.close()
    failed = os.readlink(home / "staged")  # say the recall gate failed: publish never runs
    w = writer(home, "r3", fingerprint(dim=8))  # the next refresh drops the unserved generation first
    assert not (home / "staged").exists() and not (home / failed).exists()
    w.upsert([Point(p.id, p.vector[:8], p.payload) for p in points(4)])
    w.commit()
    with pytest.raises(StoreError, match="built by run r3, not by this run .r2.: a later refresh replaced"):
        w.publish("r2")
    assert w.publish("r3")["published"] and count(home) == 4
    w.close()
    r = EdgeStore(home, IndexParams(), writer=True)
    assert r.rollback("m")["run_version"] == "r1" and count(home) == 3, "the 16-dim generation serves again"
    assert r.rollback("m")["run_version"] == "r3" and count(home) == 4, "a second rollback undoes the first"
    with pytest.raises(StoreError, match="embedded with embed.model=None, but params.yaml embeds queries with another"):
        r.rollback("another model")
    r.close()
    dense_only = tmp_path / "dense"
    published(dense_only, [Point(p.id, p.vector, p.payload) for p in points(3)], sparse=False)
    w, reason = begin(dense_only, "r2")
    assert reason == "index.sparse turned on: the serving index has no BM25 vectors"
    w.close()
    w, reason = begin(dense_only, "r3", rebuild=True, sparse=False)
    assert reason == "--rebuild was asked"
    w.close()


def test_rollback_without_a_previous_generation_changes_nothing(tmp_path):
    home = tmp_path / "ragtune"
    published(home, points(3))
    r = EdgeStore(home, IndexParams(), writer=True)
    with pytest.raises(StoreError, match="keeps no previous generation to roll back to.*Nothing was changed"):
        r.rollback("m")
    r.close()
    assert count(home) == 3


def settled(hits) -> dict[int, str]:
    """Rank -> id where the score is unlike any other returned (RRF gives equal scores to a rank-r dense-only hit
    and a rank-r sparse-only one, and equal scores may come in either order)."""
    scores = [round(h.score, 4) for h in hits]
    return {i: h.id for i, h in enumerate(hits) if scores.count(scores[i]) == 1 and scores[i] != scores[-1]}


@pytest.mark.parametrize("fusion", [Fusion(), Fusion(k=10, weights=(1.0, 2.0)), Fusion("dbsf")], ids=str)
def test_dense_sparse_and_hybrid_answers_match_local_mode(tmp_path, fusion):
    """Below the indexing threshold both engines search exactly: same ids and scores (BM25 IDF and the fusion
    included); only the order among equal scores may differ."""
    batch = points(120, seed=1)
    home = tmp_path / "edge"
    published(home, batch)
    edge = EdgeStore(home, IndexParams())
    from qdrant_client import QdrantClient

    local = QdrantStore(QdrantClient(path=str(tmp_path / "local")), IndexParams(), "local", is_server=False)
    local.ensure_collection(fingerprint(), "r1")
    local.upsert(batch)
    local.commit()
    local.publish("r1")
    rng = np.random.default_rng(7)
    for text in ("term1 term7 term30", "term12 term44", "term3 term9 term21 term50"):
        dense = rng.normal(size=DIM).tolist()
        sparse = encode_query(text)
        for d, s in ((dense, None), (None, sparse), (dense, sparse)):
            want = local.query(d, s, 10, 20, fusion)
            got = edge.query(d, s, 10, 20, fusion)
            assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5)  # float32 vs 64
            assert settled(got) == settled(want)
    edge.close()
    local.close()


def test_an_index_from_local_mode_is_refused_then_migrated_without_re_embedding(tmp_path):
    from qdrant_client import QdrantClient, models

    batch = points(40, seed=2)
    params = IndexParams(local_path="data/qdrant")
    client = QdrantClient(path=str(tmp_path / "data/qdrant"))  # a plain collection, as an earlier ragtune wrote
    client.create_collection(
        "ragtune",
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    old = QdrantStore(client, params, "old", is_server=False)
    old.upsert(batch)
    old.close()
    with pytest.raises(RagtuneError, match="Run `ragtune migrate-index` once"):
        open_store(tmp_path, params)
    done = migrate_local_mode(tmp_path, params)
    assert done["points"] == 40 and done["dim"] == DIM
    store = open_store(tmp_path, params)
    got = {str(r.id): r for records in store.records() for r in records}
    assert set(got) == {p.id for p in batch}
    for p in batch:
        r = got[p.id]
        assert np.allclose(r.vector[""], p.vector, atol=1e-6) and r.payload == p.payload
        assert list(r.vector["bm25"].indices) == p.sparse[0]  # type: ignore[index]
    store.close()
    with pytest.raises(RagtuneError, match="already holds collection 'ragtune'"):
        migrate_local_mode(tmp_path, params)
    assert (tmp_path / "data/qdrant/meta.json").exists(), "the old store is kept"
