"""plan → apply → verify → retrieve against the in-memory store and embedder (milliseconds; the same behaviour
runs against local-mode Qdrant and MiniLM in tests/flows/test_kb_refresh.py and tests/reliability)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.config import IndexParams, load_params
from tasks.core.errors import StoreError, VerifyError
from tasks.kb.index import PAYLOAD_FIELDS, apply_plan, plan_reconcile, vector_kinds, verify_index
from tasks.kb.retrieval import Retriever
from tests.fakes import HashEmbedder, MemoryStore

REPO = Path(__file__).resolve().parents[3]
DOCS = {
    "api.md": ["The API rate limit is 60 requests per minute.", "Tokens expire after one hour."],
    "hr.md": ["The meal allowance is 45 EUR per day."],
    "pricing.md": ["Heron Pro costs 329 EUR.", "Heron Lite costs 199 EUR."],
}


def chunks_of(docs: dict[str, list[str]], version: str = "v1") -> list[dict]:
    return [
        {
            "doc_id": doc,
            "point_id": f"{doc}#{i}@{version}",
            "doc_hash": f"{doc}@{version}",
            "source": "s",
            "path": doc,
            "position": i,
            "heading_path": [],
            "text": text,
            "chunk_hash": f"{doc}{i}{version}",
        }
        for doc, texts in docs.items()
        for i, text in enumerate(texts)
    ]


def reconcile(store: MemoryStore, chunks: list[dict], params: IndexParams, allow: bool = False) -> dict:
    vectors = HashEmbedder().embed([c["text"] for c in chunks])
    store.ensure_collection({"dim": vectors.shape[1]}, "run")
    plan = plan_reconcile(chunks, store.scan(PAYLOAD_FIELDS), vector_kinds(params.sparse))
    stats = apply_plan(store, plan, chunks, vectors, params, "run", "hash-bow", allow)
    verify_index(store, [c["point_id"] for c in chunks], sample=10)
    return {"plan": plan, **stats}


def test_refresh_writes_changes_then_deletes_and_verifies():
    store, params = MemoryStore(), IndexParams(sparse=True, batch_size=2)
    first = reconcile(store, chunks_of(DOCS), params)
    assert first["points_written"] == 5 and store.count() == 5
    changed = {**DOCS, "hr.md": ["The meal allowance is 50 EUR per day."]}
    del changed["pricing.md"]
    store.writes.clear()
    now = chunks_of({"api.md": DOCS["api.md"]}) + chunks_of({"hr.md": changed["hr.md"]}, "v2")
    second = reconcile(store, now, params, allow=True)
    plan = second["plan"]
    assert (plan.changed, plan.removed, plan.unchanged) == (["hr.md"], ["pricing.md"], ["api.md"])
    assert [kind for kind, _ in store.writes] == ["upsert", "delete"]  # write before delete: never a gap
    assert store.count() == 3 and second["points_deleted"] == 3
    assert reconcile(store, now, params)["points_written"] == 0  # nothing changed: nothing written


def test_mass_delete_guard_stops_before_any_write():
    store, params = MemoryStore(), IndexParams(sparse=False)
    reconcile(store, chunks_of(DOCS), params)
    store.writes.clear()
    with pytest.raises(StoreError, match="mass-deletion guard"):
        reconcile(store, chunks_of({"api.md": DOCS["api.md"]}), params)
    assert store.writes == [] and store.count() == 5


def test_verify_names_a_missing_point():
    store, params = MemoryStore(), IndexParams(sparse=False)
    chunks = chunks_of(DOCS)
    reconcile(store, chunks, params)
    store.delete([chunks[0]["point_id"]])
    with pytest.raises(VerifyError, match="holds 4 points but the manifest lists 5"):
        verify_index(store, [c["point_id"] for c in chunks], sample=5)


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_retriever_ranks_the_chunk_that_shares_the_question_words_first(mode):
    store, params = MemoryStore(), load_params(REPO / "params.yaml", ["retrieve.query_cache=false"])
    reconcile(store, chunks_of(DOCS), params.index.model_copy(update={"max_delete_share": 1.0}))
    retriever = Retriever(REPO, params, mode, store=store, embedder=HashEmbedder())
    hits = retriever.search("What is the API rate limit per minute?", top_k=2)
    assert hits[0]["doc_id"] == "api.md" and "60 requests" in hits[0]["text"]
    retriever.close()
    assert store.closed


def test_retriever_refuses_a_missing_collection_and_closes_the_store():
    store, params = MemoryStore(), load_params(REPO / "params.yaml")
    with pytest.raises(StoreError, match="does not exist"):
        Retriever(REPO, params, "dense", store=store, embedder=HashEmbedder())
    assert store.closed
