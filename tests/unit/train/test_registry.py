"""The promotion rule (tasks/train/registry.py)."""

from __future__ import annotations

from tasks.train.registry import decide, primary_metric


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
