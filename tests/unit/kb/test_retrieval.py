"""Convex fusion of a dense and a BM25 candidate list (tasks/kb/retrieval.py), on literal scores."""

from __future__ import annotations

from tasks.kb.retrieval import convex_fusion, standardize
from tasks.kb.vectors import Hit


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(pid, score, {"doc_id": pid}) for pid, score in pairs]


def test_scores_on_different_scales_weigh_alike_after_standardizing():
    dense = hits(("a", 0.82), ("b", 0.80), ("c", 0.50))  # cosine: a and b nearly tied
    sparse = hits(("b", 14.0), ("d", 6.0), ("a", 5.0))  # BM25: b far ahead
    assert [h.id for h in convex_fusion(dense, sparse, 0.5)][:2] == ["b", "a"]
    assert [h.id for h in convex_fusion(dense, sparse, 1.0)][:3] == ["a", "b", "c"]  # dense order alone
    assert [h.id for h in convex_fusion(dense, sparse, 0.0)][:3] == ["b", "d", "a"]  # BM25 order alone
    assert {h.id for h in convex_fusion(dense, sparse, 0.5)} == {"a", "b", "c", "d"}


def test_a_hit_missing_from_one_list_ranks_below_its_candidates_there():
    dense = hits(("a", 0.9), ("b", 0.5))
    sparse = hits(("c", 3.0), ("a", 2.0), ("b", 1.0))
    fused = {h.id: h.score for h in convex_fusion(dense, sparse, 0.5)}
    assert fused["c"] < fused["a"]  # c: best BM25 hit, but absent from dense, so dense's lowest z
    assert standardize(hits(("x", 1.0))) == ({"x": 0.0}, -1.0) and convex_fusion([], [], 0.5) == []
    one = convex_fusion(hits(("a", 0.9), ("b", 0.8)), hits(("b", 10.0)), 0.0)  # a one-hit BM25 list still decides
    assert [h.id for h in one] == ["b", "a"]
