"""Recall@k, MRR@k and the retrieval gate on hand-made hits (tasks/kb/retrieval_eval.py)."""

from __future__ import annotations

import pytest

from tasks.kb.retrieval_eval import evaluate, gate, percentile, score_row

QA = [  # hand-made: the relevant chunks and their ranks are known
    {"question": "q1", "answers": ["thirty minutes"], "doc_ids": []},
    {"question": "q2", "answers": [], "doc_ids": ["a", "b"]},
    {"question": "q3", "answers": ["HX-7734-Q"], "doc_ids": ["c"]},
    {"question": "q4", "answers": ["nowhere"], "doc_ids": []},
]


HITS = {
    "q1": [{"doc_id": "x", "text": "no"}, {"doc_id": "y", "text": "It takes Thirty  minutes."}],  # rank 2
    "q2": [{"doc_id": "a", "text": ""}, {"doc_id": "z", "text": ""}, {"doc_id": "a", "text": ""}],  # 1 of 2 docs
    "q3": [{"doc_id": "d", "text": "HX-7734-Q"}, {"doc_id": "c", "text": "the hx-7734-q model"}],  # doc d is wrong
    "q4": [{"doc_id": "x", "text": "no"}],
}


def test_recall_and_mrr_on_a_hand_made_qa_set():
    assert score_row(HITS["q1"], QA[0], 5) == (1.0, 0.5)
    assert score_row(HITS["q1"], QA[0], 1) == (0.0, 0.0)
    assert score_row(HITS["q2"], QA[1], 5) == (0.5, 1.0)
    assert score_row(HITS["q3"], QA[2], 5) == (1.0, 0.5)
    asked = []
    res = evaluate(
        lambda q, k: asked.append(k) or (HITS[q], {"q1": 10.0, "q2": 20.0, "q3": 30.0, "q4": 40.0}[q]), QA, 5
    )
    assert asked == [5] * 4, "the search is asked for k hits"
    assert res["recall_at_5"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert res["mrr_at_5"] == pytest.approx((0.5 + 1 + 0.5 + 0) / 4)
    assert (res["p50_ms"], res["p95_ms"]) == (20.0, 40.0) and res["missed"] == ["q4"]
    assert percentile([5.0], 95) == 5.0


def test_recall_gate_fails_on_a_drop_beyond_the_margin_and_resets_on_a_new_qa_set():
    base = {"k": 5, "recall_at_5": 0.9, "qa_sha256": "s", "mode": "hybrid", "run_version": "r1"}
    assert gate({**base, "recall_at_5": 0.86}, base, 0.05)[0]
    ok, reason = gate({**base, "recall_at_5": 0.8}, base, 0.05)
    assert not ok and "0.9000" in reason and "r1" in reason and "max_recall_drop=0.05" in reason
    assert gate({**base, "recall_at_5": 0.1, "qa_sha256": "other"}, base, 0.05)[0]
    assert gate(base, None, 0.05)[0]
