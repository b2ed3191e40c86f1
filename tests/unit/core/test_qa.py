"""QA files and SQuAD scoring (tasks/core/qa.py)."""

from __future__ import annotations

import pytest

from tasks.core.errors import SourceError
from tasks.core.qa import normalize, read_qa_set, squad_scores, token_f1


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
