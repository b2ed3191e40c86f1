"""Reconcile plans and the mass-delete guard (tasks/kb/index.py)."""

import pytest

from tasks.core.config import IndexParams
from tasks.core.errors import StoreError
from tasks.kb.index import check_mass_delete, plan_reconcile, vector_kinds


def chunk(doc, pid, h="h1"):
    return {"doc_id": doc, "point_id": pid, "doc_hash": h}


def test_plan_classifies_documents_and_deletes_after_upsert():
    stored = {
        "a1": {"doc_id": "a", "doc_hash": "h1"},
        "b1": {"doc_id": "b", "doc_hash": "old"},
        "b2": {"doc_id": "b", "doc_hash": "old"},
        "c1": {"doc_id": "c", "doc_hash": "h1"},
        "d1": {"doc_id": "d", "doc_hash": "h1"},
    }
    desired = [
        chunk("a", "a1"),
        chunk("b", "b1", "new"),
        chunk("b", "b3", "new"),
        chunk("d", "d1"),
        chunk("d", "d2"),
        chunk("e", "e1"),
    ]
    plan = plan_reconcile(desired, stored)
    assert (plan.added, plan.changed, plan.unchanged, plan.removed, plan.repaired) == (
        ["e"],
        ["b"],
        ["a"],
        ["c"],
        ["d"],
    )
    assert sorted(plan.upsert_ids) == ["b1", "b3", "d1", "d2", "e1"]
    assert sorted(plan.delete_ids) == ["b2", "c1"]


def test_unchanged_store_plans_nothing():
    plan = plan_reconcile([chunk("a", "a1")], {"a1": {"doc_id": "a", "doc_hash": "h1"}})
    assert plan.upsert_ids == [] and plan.delete_ids == []


def test_mass_delete_guard():
    stored = {f"p{i}": {"doc_id": f"d{i}", "doc_hash": "h"} for i in range(10)}
    plan = plan_reconcile([chunk("d0", "p0", "h")], stored)  # nine of ten documents vanished
    with pytest.raises(StoreError, match=r"delete 9 of 10 points \(90%\).*--allow-mass-delete"):
        check_mass_delete(plan, IndexParams(), allow=False, location="test")
    check_mass_delete(plan, IndexParams(), allow=True, location="test")
    check_mass_delete(plan, IndexParams(max_delete_share=0.95), allow=False, location="test")


def test_points_without_sparse_vectors_are_rewritten_when_sparse_is_on():
    chunks = [{"doc_id": "a", "doc_hash": "h", "point_id": "p1"}]
    old = {"p1": {"doc_id": "a", "doc_hash": "h"}}  # written before sparse vectors existed
    assert plan_reconcile(chunks, old).unchanged == ["a"]
    plan = plan_reconcile(chunks, old, vector_kinds(True))
    assert plan.repaired == ["a"] and plan.upsert_ids == ["p1"] and not plan.delete_ids
    new = {"p1": {"doc_id": "a", "doc_hash": "h", "vectors": vector_kinds(True)}}
    assert plan_reconcile(chunks, new, vector_kinds(True)).unchanged == ["a"]
