"""The recommendation and the held-out check of compare (tasks/answer/compare.py)."""

from __future__ import annotations

import pytest

from tasks.answer.compare import evaluate_mode, recommend, refuse_trained_questions, training_overlap
from tasks.core.config import CompareParams, ConfigError
from tasks.train.examples import question_hash


def _mode(mode, f1, p95=100.0, recall=None):
    return {
        "mode": mode,
        "status": "ok",
        "exact": 0.0,
        "f1": f1,
        "contains": f1,
        "recall_at_5": recall,
        "p50_ms": p95 / 2,
        "p95_ms": p95,
        "model": "m",
        "params_m": 134.5,
    }


def _costs(changes: int, refresh=20.0, retrain=200.0):
    return {
        "index": {"points": 90, "store_mb": 1.0, "refresh_seconds": refresh},
        "adapter": {
            "version": "v1",
            "adapter_mb": 0.1,
            "train_seconds": 50.0,
            "retrain_seconds": retrain,
            "trainings": 2,
        },
        "knowledge": {
            "refreshes": 5,
            "refreshes_with_changes": changes,
            "span_days": 4.0,
            "days_between_changes": 4.0 / changes if changes else None,
            "mean_changed_documents": 3.0 if changes else None,
        },
    }


def test_recommendation_prefers_the_cheapest_to_keep_current_among_equally_accurate_modes():
    results = [_mode("base", 0.1), _mode("rag", 0.70, recall=0.9), _mode("ft", 0.40), _mode("hybrid", 0.72, recall=0.9)]
    rec = recommend(results, _costs(3), CompareParams())
    assert rec["choice"] == "rag", rec
    text = " ".join(rec["why"])
    assert "rag 0.70" in text and "hybrid 0.72" in text and "3 of 5 refreshes" in text and "20.0 s" in text
    assert "F1" in text and "134.5M parameters" in text


def test_recommendation_follows_accuracy_latency_budget_and_freshness():
    results = [_mode("rag", 0.50, p95=900), _mode("ft", 0.52, p95=200), _mode("hybrid", 0.80, p95=950)]
    assert recommend(results, _costs(3), CompareParams())["choice"] == "hybrid"
    budget = recommend(results, _costs(3), CompareParams(latency_budget_ms=500))
    assert budget["choice"] == "ft" and "Over the 500 ms p95 latency budget" in budget["why"][0]
    static = [_mode("base", 0.6, p95=50), _mode("rag", 0.6, p95=300)]
    assert recommend(static, _costs(0), CompareParams())["choice"] == "base"  # nothing changes: no upkeep
    assert recommend(static, _costs(2), CompareParams())["choice"] == "rag"  # base cannot learn the changes


def test_no_recommendation_when_no_mode_answers_anything():
    rec = recommend([_mode("rag", 0.0, recall=0.95), _mode("ft", 0.0)], _costs(1), CompareParams())
    assert rec["choice"] is None and "too weak" in rec["why"][-1] and "rag recall 0.95" in rec["why"][-1]
    assert recommend([{**_mode("rag", None), "contains": None}], _costs(1), CompareParams())["choice"] is None


def test_a_qa_file_with_doc_ids_only_is_scored_on_retrieval_and_says_so():
    rows = [{"question": "q", "answers": [], "doc_ids": ["a.md"]}]
    calls = []

    def answer_many(questions, mode, on_progress=None, generate=True):
        calls.append((mode, generate))
        return [
            {
                "answer": None,
                "note": None,
                "sources": [{"doc_id": "a.md", "text": "x"}],
                "timings_ms": {"retrieve": 5.0, "generate": 0.0, "total": 5.0, "batch": 1},
            }
        ]

    ft = evaluate_mode(answer_many, "ft", rows, 3)
    rag = evaluate_mode(answer_many, "rag", rows, 3)
    assert calls == [("rag", False)], "nothing is generated, and ft does not even run"
    assert ft["status"] == "not scored" and "doc_ids only" in ft["reason"]
    assert rag["status"] == "retrieval only" and rag["recall_at_3"] == 1.0 and rag["f1"] is None
    rec = recommend([ft, rag], _costs(1), CompareParams())
    assert rec["choice"] is None and "no answers" in rec["why"][0] and "rag recall@3 1.00" in rec["why"][0]


def test_an_adapter_is_never_scored_on_questions_it_trained_on():
    info = {
        "dataset": {
            "format": "qa",
            "train_questions": [question_hash("How long is the warranty?")],
            "heldout_qa": "data/train/heldout_qa.jsonl",
            "heldout_questions": 4,
        }
    }
    rows = [
        {"question": "how long is the  WARRANTY?", "answers": ["5 years"], "doc_ids": []},
        {"question": "Something else?", "answers": ["x"], "doc_ids": []},
    ]
    assert training_overlap(info, rows) == 1
    with pytest.raises(
        ConfigError,
        match=r"q.jsonl: 1 of 2 questions were in adapter v7's training set "
        r"\(dataset.format=qa, 1 training questions\).*heldout_qa.jsonl \(4",
    ):
        refuse_trained_questions("v7", info, rows, "q.jsonl")
    refuse_trained_questions("v7", info, rows[1:], "q.jsonl")  # disjoint: fine
