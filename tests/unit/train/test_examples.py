"""Training formats are detected and bad records flagged (tasks/train/examples.py)."""

from __future__ import annotations

import json

import pytest

from tasks.core.errors import SourceError
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


def test_same_file_name_in_two_folders_gives_distinct_ids(tmp_path):
    """Example ids carry the path under the project root, as doc_ids do, so a/qa.jsonl and b/qa.jsonl differ."""
    for folder, answer in (("a", "blue"), ("b", "green")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "qa.jsonl").write_text(json.dumps({"question": "colour?", "answers": [answer]}) + "\n")
    examples, _ = read_examples(tmp_path, ["a/qa.jsonl", "b/qa.jsonl"], "qa", None)
    assert [e.example_id for e in examples] == ["a/qa.jsonl:1", "b/qa.jsonl:1"]


def test_a_file_listed_twice_is_refused(tmp_path):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "colour?", "answers": ["blue"]}) + "\n")
    with pytest.raises(SourceError, match="lists qa.jsonl twice"):
        read_examples(tmp_path, ["qa.jsonl", str(tmp_path / "qa.jsonl")], "qa", None)
