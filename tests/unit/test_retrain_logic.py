"""Pure retrain logic: loss mask, split, packing, cache key, promotion rule, config checks, adapter checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.config import ConfigError, DatasetParams, TrainParams, load_params
from tasks.lm.templates import chat_template
from tasks.train import dataset as D
from tasks.train.adapter import VerifyAdapterError, classification_metrics, verify_adapter
from tasks.train.examples import Example, read_examples
from tasks.train.registry import decide, primary_metric
from tasks.train.trainer import complete_checkpoints, deepspeed_config, precision

REPO = Path(__file__).resolve().parents[2]


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


def test_formats_are_detected_and_missing_fields_are_flagged(tmp_path):
    f = tmp_path / "chat.jsonl"
    f.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
        + "\n"
    )
    examples, fmt = read_examples(tmp_path, ["chat.jsonl"], "auto", None)
    assert fmt == "chat" and examples[0].problem == "" and "no assistant message" in examples[1].problem
    (tmp_path / "labels.jsonl").write_text(json.dumps({"text": "charged twice", "label": "billing"}) + "\n")
    assert read_examples(tmp_path, ["labels.jsonl"], "auto", None)[1] == "labelled"


def test_promotion_rule():
    assert decide({"eval_loss": 2.0}, None, "eval_loss", 0.1).promote
    better = decide({"eval_loss": 1.5}, {"eval_loss": 2.0}, "eval_loss", 0.1)
    assert better.promote and "better" in better.reason
    small = decide({"eval_loss": 1.95}, {"eval_loss": 2.0}, "eval_loss", 0.1)
    assert not small.promote and "below promote.min_delta=0.1" in small.reason
    assert decide({"f1": 0.8}, {"f1": 0.7}, "f1", 0.05).promote
    assert not decide({"f1": 0.7}, {"f1": 0.7}, "f1", 0.0).promote, "a tie never replaces production"
    assert not decide({}, None, "qa_exact", 0).promote
    assert primary_metric("auto", "seq_cls") == "f1" and primary_metric("auto", "causal_lm") == "eval_loss"


def test_classification_metrics():
    m = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2])
    assert m["accuracy"] == 0.75 and 0 < m["f1"] < 1


def test_training_config_is_checked_before_any_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="train.deepspeed: .*missing.json does not exist"):
        deepspeed_config(tmp_path, TrainParams(deepspeed="missing.json"))
    (tmp_path / "typo.json").write_text(json.dumps({"zero_optimisation": {"stage": 2}}))
    with pytest.raises(ConfigError, match="unknown top-level keys \\['zero_optimisation'\\]"):
        deepspeed_config(tmp_path, TrainParams(deepspeed="typo.json"))
    assert deepspeed_config(REPO, TrainParams(deepspeed="none")) is None
    for name in ("zero2.json", "zero3.json", "zero3_offload.json"):
        assert deepspeed_config(REPO, TrainParams(deepspeed=f"infra/deepspeed/{name}")).is_file()
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            precision(TrainParams(precision="fp16"))
    with pytest.raises(ConfigError, match="train.lora.r"):
        load_params(REPO / "params.yaml", ["train.lora.r=0"])
    with pytest.raises(ConfigError, match="unknown key 'rank'"):
        load_params(REPO / "params.yaml", ["train.lora.rank=8"])


def test_incomplete_checkpoints_are_not_resumed_from(tmp_path):
    for step, files in (
        (10, ["trainer_state.json", "adapter_model.safetensors", "latest"]),
        (20, ["adapter_model.safetensors"]),
    ):  # killed while saving
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        for f in files:
            (d / f).write_text("x")
    assert [d.name for d in complete_checkpoints(tmp_path)] == ["checkpoint-10"]


def test_adapter_verification_catches_empty_and_missing_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    expected = {"base.q.lora_A.weight": [4, 8], "base.q.lora_B.weight": [8, 4]}
    save_file(
        {"base.q.lora_A.weight": torch.ones(4, 8), "base.q.lora_B.weight": torch.ones(8, 4)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    assert verify_adapter(tmp_path, expected)["parameters"] == 64
    save_file(
        {"base.q.lora_A.weight": torch.ones(4, 8), "base.q.lora_B.weight": torch.zeros(0)},
        str(tmp_path / "adapter_model.safetensors"),
    )  # what ZeRO-3 without gathering writes
    with pytest.raises(VerifyAdapterError, match="empty or have the wrong shape"):
        verify_adapter(tmp_path, expected)
    save_file({"base.q.lora_A.weight": torch.ones(4, 8)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(VerifyAdapterError, match="keys differ"):
        verify_adapter(tmp_path, expected)
    save_file(
        {"base.q.lora_A.weight": torch.ones(4, 8), "base.q.lora_B.weight": torch.zeros(8, 4)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    with pytest.raises(VerifyAdapterError, match="every lora_B weight is zero"):
        verify_adapter(tmp_path, expected)
