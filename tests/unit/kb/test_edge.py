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


def writer(home: Path, **kw) -> EdgeStore:
    store = EdgeStore(home, IndexParams(**kw), writer=True)
    store.ensure_collection(DIM)
    return store


def published(home: Path, batch: list[Point]) -> None:
    store = writer(home)
    store.upsert(batch)
    store.commit()
    store.close()


def test_readers_see_the_published_generation_only(tmp_path):
    home = tmp_path / "ragtune"
    published(home, points(30))
    reader = EdgeStore(home, IndexParams())
    w = writer(home)
    w.delete([p.id for p in points(30)[:10]])
    assert reader.count() == 30 and EdgeStore(home, IndexParams()).count() == 30  # not published yet
    w.commit()
    w.close()
    assert reader.count() == 30, "a reader keeps the generation it opened"
    assert EdgeStore(home, IndexParams()).count() == 20
    assert (home / reader.generation.name).is_dir()  # type: ignore[union-attr]  held, so not deleted
    reader.close()
    w = writer(home)  # the next writer removes what no reader holds
    w.close()
    assert [p.name for p in home.glob("gen-*") if p.is_dir()] == [os.readlink(home / "current")]


def test_a_writer_that_writes_nothing_publishes_nothing_and_an_uncommitted_one_leaves_nothing(tmp_path):
    home = tmp_path / "ragtune"
    published(home, points(5))
    current = os.readlink(home / "current")
    w = writer(home)
    assert w.scan(["doc_id"]).keys() == {p.id for p in points(5)}
    assert w.commit()["generation"] == current
    w.close()
    w = writer(home)
    w.upsert(points(8))
    w.close()  # killed or failed before commit: the copy is scratch
    assert os.readlink(home / "current") == current
    assert sorted(p.name for p in home.iterdir()) == ["current", current, f"{current}.lock"]


def test_a_collection_of_another_dimension_is_refused_with_the_fix(tmp_path):
    home = tmp_path / "ragtune"
    published(home, points(3))
    store = EdgeStore(home, IndexParams(), writer=True)
    with pytest.raises(StoreError, match=r"holds 16-dim Cosine vectors, but this run makes 8-dim.*new index"):
        store.ensure_collection(8)
    dense_only = writer(tmp_path / "dense", sparse=False)
    dense_only.upsert([Point(p.id, p.vector, p.payload) for p in points(3)])
    dense_only.commit()
    dense_only.close()
    with pytest.raises(StoreError, match="created without sparse vectors"):
        writer(tmp_path / "dense")


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
    local.ensure_collection(DIM)
    local.upsert(batch)
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
    from qdrant_client import QdrantClient

    batch = points(40, seed=2)
    params = IndexParams(local_path="data/qdrant")
    old = QdrantStore(QdrantClient(path=str(tmp_path / "data/qdrant")), params, "old", is_server=False)
    old.ensure_collection(DIM)
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
