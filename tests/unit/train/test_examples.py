"""Training formats are detected and bad records flagged (tasks/train/examples.py)."""

from __future__ import annotations

import json

from tasks.train.examples import read_examples


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
