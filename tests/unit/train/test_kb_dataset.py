"""Training data from the knowledge base: QA, RAFT, kb_text (tasks/train/kb_dataset.py, tasks/train/examples.py)."""

from __future__ import annotations

import json

import pytest

from tasks.core.config import DatasetParams, RaftParams
from tasks.core.errors import SourceError
from tasks.train.dataset import Encoded, split
from tasks.train.examples import data_version, encoding, question_hash, read_examples, to_example
from tasks.train.kb_dataset import build_raft, holds_answer, pick_distractors, pick_oracle, quote, raft_example

CHUNKS = [
    {"doc_id": "api.md", "position": 0, "source": "s", "text": "Tokens expire after one hour. Renew them early."},
    {"doc_id": "api.md", "position": 1, "source": "s", "text": "The rate limit is 60 requests per minute."},
    {"doc_id": "pricing.md", "position": 0, "source": "s", "text": "Heron Pro costs 329 EUR."},
    {"doc_id": "hr.md", "position": 0, "source": "s", "text": "The meal allowance is 45 EUR per day."},
    {
        "doc_id": "copy.md",
        "position": 0,
        "source": "s",
        "text": "An old page: the rate limit is 60 requests per minute.",
    },
]


QA = {"question": "What is the API rate limit?", "answers": ["60 requests per minute"], "doc_ids": ["api.md"]}


def _qa_example(qa=QA):
    return to_example(qa, "qa", "qa.jsonl:1", None)


def test_qa_rows_become_question_answer_turns_split_by_question():
    ex = _qa_example()
    assert [m["role"] for m in ex.messages] == ["user", "assistant"]
    assert ex.messages[1]["content"] == "60 requests per minute" and encoding("qa") == "instruction"
    assert ex.split_key == question_hash("what is the  API rate limit?")  # case and spaces do not matter
    assert to_example({"question": "q"}, "qa", "qa.jsonl:2", None).problem  # no answer: the gate reports it
    assert encoding("kb_text") == "text" and encoding("raft") == "instruction" and encoding("chat") == "chat"


def test_the_split_keeps_a_question_on_one_side_whatever_its_passages():
    p = DatasetParams(eval_share=0.5, min_eval_examples=0)
    # the same question with different passages (a changed index) must land on the same side
    a = [Encoded(f"e{i}", f"content-{i}", [1], [1], 1, question_hash(f"q{i}")) for i in range(20)]
    b = [Encoded(f"e{i}", f"other-{i}", [1], [1], 1, question_hash(f"q{i}")) for i in range(20)]
    side = lambda enc: {e.example_id for e in split(enc, p)[1]}  # noqa: E731
    assert side(a) == side(b) and 0 < len(side(a)) < 20


def test_the_oracle_comes_from_the_rows_documents_first():
    hits = [CHUNKS[4], CHUNKS[0]]  # retrieval ranks the stale copy first
    oracle, where = pick_oracle(QA, hits, CHUNKS)
    assert oracle is CHUNKS[1] and where == "doc_ids"
    oracle, where = pick_oracle({**QA, "doc_ids": []}, hits, CHUNKS)
    assert oracle is CHUNKS[4] and where == "retrieved"
    assert pick_oracle({**QA, "answers": ["nowhere"]}, hits, CHUNKS) == (None, "none")


def test_a_passage_holds_an_answer_only_on_word_boundaries():
    assert holds_answer("The rate fell to 71 % in March.", ["71 %"])
    assert not holds_answer("The rate fell to 171 % in March.", ["71 %"])
    assert not holds_answer("Warranty: 15 years.", ["5 years"]) and holds_answer("HX-7734-Q ships.", ["hx-7734-q"])


def test_distractors_never_hold_the_answer_and_prefer_retrieved_chunks():
    import random

    hits = [CHUNKS[1], CHUNKS[4], CHUNKS[0], CHUNKS[2]]
    got = pick_distractors(QA, hits, CHUNKS, 2, random.Random(0), CHUNKS[1])
    assert got == [CHUNKS[0], CHUNKS[2]]  # the stale copy holds the answer too: not a distractor
    topped = pick_distractors(QA, [], CHUNKS, 3, random.Random(0), CHUNKS[1])
    assert len(topped) == 3 and all("60 requests" not in c["text"] for c in topped)


def test_raft_examples_use_the_answering_prompt_and_keep_the_oracle_in_the_configured_share():
    made, kept = raft_example(
        _qa_example(), CHUNKS[1], [CHUNKS[0], CHUNKS[2], CHUNKS[3]], RaftParams(oracle_share=1.0), 42, None
    )
    user, target = made.messages[0]["content"], made.messages[1]["content"]
    assert kept and target == "60 requests per minute" and user.count("\n[") == 3  # oracle + 2 distractors
    assert "(api.md) The rate limit is 60 requests per minute." in user and user.endswith("Question: " + QA["question"])
    made, kept = raft_example(
        _qa_example(), CHUNKS[1], [CHUNKS[0], CHUNKS[2], CHUNKS[3]], RaftParams(oracle_share=0.0), 42, None
    )
    assert (
        not kept and "60 requests" not in made.messages[0]["content"] and made.messages[0]["content"].count("\n[") == 3
    )
    quoted, _ = raft_example(
        _qa_example(), CHUNKS[1], [CHUNKS[0]], RaftParams(distractors=1, oracle_share=1.0, quote=True), 42, None
    )
    assert (
        "Evidence: [" in quoted.messages[1]["content"] and '60 requests per minute."' in quoted.messages[1]["content"]
    )
    assert (
        quote("First. The limit is 60 requests per minute. Last.", QA["answers"])
        == "The limit is 60 requests per minute."
    )


def test_build_raft_is_deterministic_and_counts_the_oracle_share():
    rows = [
        {
            "question": f"Question {i} about the rate limit?",
            "answers": ["60 requests per minute"],
            "doc_ids": ["api.md"],
        }
        for i in range(40)
    ]
    examples = [to_example(r, "raft", f"qa.jsonl:{i}", None) for i, r in enumerate(rows, 1)]
    search = lambda q, k: CHUNKS[:k]  # noqa: E731
    first, stats = build_raft(examples, search, CHUNKS, RaftParams(oracle_share=0.8), 42, None)
    again, _ = build_raft(examples, search, CHUNKS, RaftParams(oracle_share=0.8), 42, None)
    assert [e.messages for e in first] == [e.messages for e in again]
    assert stats["with_oracle"] + stats["without_oracle"] == 40 and 20 <= stats["with_oracle"] <= 39
    assert stats["oracle_found"] == {"doc_ids": 40}


def test_kb_text_reads_the_index_chunks_and_says_how_to_make_them(tmp_path):
    with pytest.raises(SourceError, match="Run `ragtune refresh` first"):
        read_examples(tmp_path, ["ignored.jsonl"], "kb_text", None)
    (tmp_path / "data/chunks").mkdir(parents=True)
    (tmp_path / "data/chunks/chunks.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHUNKS))
    examples, fmt = read_examples(tmp_path, ["ignored.jsonl"], "kb_text", None)
    assert fmt == "kb_text" and [e.text for e in examples] == [c["text"] for c in CHUNKS]
    assert examples[0].example_id == "api.md#0"


def test_qa_files_are_detected_and_read_as_qa(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text(json.dumps(QA) + "\n" + json.dumps({"question": "Cost?", "answer": "329 EUR"}) + "\n")
    examples, fmt = read_examples(tmp_path, ["qa.jsonl"], "auto", None)
    assert fmt == "qa" and examples[1].qa == {"question": "Cost?", "answers": ["329 EUR"], "doc_ids": []}


def test_qa_formats_refuse_other_rows_with_the_fix_and_missing_kb_files_are_versioned_as_missing(tmp_path):
    (tmp_path / "inst.jsonl").write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n")
    with pytest.raises(
        SourceError,
        match=r"inst.jsonl:1: dataset.format=raft reads question/answers rows.*"
        r"dataset.format=auto",
    ):
        read_examples(tmp_path, ["inst.jsonl"], "raft", None)
    assert data_version(tmp_path, ["data/chunks/chunks.jsonl"]) == {"data/chunks/chunks.jsonl": "missing"}


def test_rows_of_one_question_stay_on_one_side_of_the_cut():
    p = DatasetParams(eval_share=0.0001, min_eval_examples=1)
    enc = [Encoded(f"e{i}", f"c{i}", [1], [1], 1, question_hash(f"q{i // 2}")) for i in range(20)]  # pairs
    train, evals = split(enc, p)
    held = {e.split_key for e in evals}
    assert len(evals) == 2 and not held & {e.split_key for e in train}
