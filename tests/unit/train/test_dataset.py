"""Loss masks, templates, the split, packing and the encoding cache key (tasks/train/dataset.py)."""

from __future__ import annotations

import pytest

from tasks.core.config import ConfigError, DatasetParams
from tasks.lm.templates import chat_template
from tasks.train import dataset as D
from tasks.train.examples import Example


@pytest.fixture(scope="module")
def tokenizer(tiny_causal):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_causal)


def test_only_assistant_turns_are_trained_and_they_end_with_eos(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Rate limit?"},
        {"role": "assistant", "content": "60 per minute."},
        {"role": "user", "content": "Token life?"},
        {"role": "assistant", "content": "One hour."},
    ]
    ids, labels = D.encode_chat(tokenizer, chat_template(tokenizer, "chatml"), messages)
    trained = tokenizer.decode([t for t in labels if t != D.IGNORE])
    assert "60 per minute." in trained and "One hour." in trained
    assert "Rate limit" not in trained and "Be brief" not in trained and "assistant" not in trained
    assert trained.count("<|im_end|>") == 2, "each assistant turn's end-of-turn token is trained"
    assert len(ids) == len(labels)


def test_fallback_template_is_used_only_without_a_tokenizer_template(tokenizer):
    assert chat_template(tokenizer, "plain") == tokenizer.chat_template
    tokenizer_without = type("T", (), {"chat_template": None})()
    assert "### Assistant" in chat_template(tokenizer_without, "plain")
    with pytest.raises(ConfigError, match="dataset.fallback_template"):
        chat_template(tokenizer_without, "no-such-template")


def encoded(n: int) -> list[D.Encoded]:
    return [D.Encoded(f"f:{i}", f"hash{i}", [1, 2, 3], [1, 2, 3], 3) for i in range(n)]


def test_split_is_deterministic_stable_as_data_grows_and_drops_duplicates():
    p = DatasetParams(eval_share=0.2, min_eval_examples=1)
    train, evals = D.split(encoded(50), p)
    assert len(train) + len(evals) == 50 and len(evals) >= 1
    _, evals_again = D.split(encoded(50), p)
    assert [e.example_id for e in evals] == [e.example_id for e in evals_again]
    _, evals_more = D.split(encoded(80), p)
    assert {e.example_id for e in evals} <= {e.example_id for e in evals_more}
    dup = encoded(10) + [D.Encoded("f:dup", "hash0", [1], [1], 1)]
    train, evals = D.split(dup, DatasetParams(eval_share=0.1, min_eval_examples=1))
    assert len(train) + len(evals) == 10


def test_packing_keeps_examples_whole_and_restarts_positions():
    rows = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate([5, 3, 4, 2], 1)]
    bins = D.pack(rows, max_length=8)
    assert all(len(b["input_ids"]) <= 8 for b in bins)
    assert sorted(t for b in bins for t in b["input_ids"]) == sorted(t for r in rows for t in r["input_ids"])
    assert bins[0]["position_ids"] == [0, 1, 2, 3, 4, 0, 1, 2]


def test_cache_key_changes_with_tokenizer_template_and_length():
    ex = [Example("f:1", "instruction", messages=[{"role": "user", "content": "q"}])]
    p = DatasetParams()
    base = D.cache_key(ex, "tok-a", "tmpl", "instruction", p, "causal_lm")
    assert base == D.cache_key(ex, "tok-a", "tmpl", "instruction", p, "causal_lm")
    assert base != D.cache_key(ex, "tok-b", "tmpl", "instruction", p, "causal_lm")
    assert base != D.cache_key(ex, "tok-a", "other", "instruction", p, "causal_lm")
    assert base != D.cache_key(ex, "tok-a", "tmpl", "instruction", DatasetParams(max_length=256), "causal_lm")
