"""Pure logic behind retrieval, its evaluation and the compare recommendation: hand-made inputs, known answers."""

from __future__ import annotations

import pytest

from tasks.answer.compare import evaluate_mode, recommend, refuse_trained_questions, training_overlap
from tasks.core.config import CompareParams, ConfigError
from tasks.core.errors import SourceError
from tasks.core.qa import normalize, read_qa_set, squad_scores, token_f1
from tasks.kb.index import plan_reconcile, vector_kinds
from tasks.kb.retrieval_eval import evaluate, gate, percentile, score_row
from tasks.kb.sparse import encode_document, encode_query, term_id, terms
from tasks.train.examples import question_hash


def test_sparse_terms_keep_product_codes_whole_and_split():
    assert terms("The Heron Pro (HX-7734-Q) is certified") == [
        "heron",
        "pro",
        "hx-7734-q",
        "hx",
        "7734",
        "q",
        "certified",
    ]
    idx, val = encode_query("HX-7734-Q? hx-7734-q")
    assert idx == sorted({term_id("hx-7734-q"), term_id("hx"), term_id("7734"), term_id("q")}) and set(val) == {1.0}
    assert encode_query("what is the") == ([], [])


def test_sparse_document_weights_saturate_and_are_deterministic():
    one = dict(zip(*encode_document("valve " + "filler " * 10)))
    three = dict(zip(*encode_document("valve valve valve " + "filler " * 8)))
    v = term_id("valve")
    assert one[v] < three[v] < 2.2, "BM25 tf saturates below k1 + 1"
    assert encode_document("same text here") == encode_document("same text here")


def test_points_without_sparse_vectors_are_rewritten_when_sparse_is_on():
    chunks = [{"doc_id": "a", "doc_hash": "h", "point_id": "p1"}]
    old = {"p1": {"doc_id": "a", "doc_hash": "h"}}  # written before sparse vectors existed
    assert plan_reconcile(chunks, old).unchanged == ["a"]
    plan = plan_reconcile(chunks, old, vector_kinds(True))
    assert plan.repaired == ["a"] and plan.upsert_ids == ["p1"] and not plan.delete_ids
    new = {"p1": {"doc_id": "a", "doc_hash": "h", "vectors": vector_kinds(True)}}
    assert plan_reconcile(chunks, new, vector_kinds(True)).unchanged == ["a"]


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


def test_answers_are_scored_like_squad():
    assert squad_scores("About Thirty minutes.", ["thirty minutes"]) == {"exact": 0.0, "f1": 0.8, "contains": 1.0}
    assert squad_scores("The HX-7734-Q", ["hx-7734-q"]) == {"exact": 1.0, "f1": 1.0, "contains": 1.0}  # articles go
    assert round(squad_scores("60 requests.", ["sixty requests", "60 requests per minute"])["f1"], 3) == 0.667
    assert squad_scores("no idea", ["45 EUR per day"]) == {"exact": 0.0, "f1": 0.0, "contains": 0.0}
    assert normalize("An apple, the pear!") == "apple pear" and token_f1("", "x") == 0.0
    assert squad_scores("It lasts 15 years.", ["5 years"])["contains"] == 0.0  # whole tokens only
    assert squad_scores("The rate fell to 171 %", ["71 %"])["contains"] == 0.0


def test_qa_file_errors_name_the_line_and_the_fix(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text('{"question": "ok", "answer": "yes"}\n{"question": "no target"}\n')
    with pytest.raises(SourceError, match=r"qa.jsonl:2: needs 'answers' and/or 'doc_ids'"):
        read_qa_set(f)
    f.write_text('{"question": "x", "answers": "one"}\nnot json\n')
    with pytest.raises(SourceError, match=r"qa.jsonl:2: not valid JSON"):
        read_qa_set(f)
    with pytest.raises(SourceError, match="does not exist"):
        read_qa_set(tmp_path / "missing.jsonl")
    f.write_text('{"question": "x", "answer": "one", "doc_ids": ["d"]}\n')
    assert read_qa_set(f) == [{"question": "x", "answers": ["one"], "doc_ids": ["d"]}]


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
