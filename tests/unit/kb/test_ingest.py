"""Walking sources: ids, formats, symlinks, missing folders (tasks/kb/ingest.py)."""

import json
import os

import pytest

from tasks.core.config import IngestParams
from tasks.core.errors import SourceError
from tasks.kb.ingest import ingest_sources, to_record


def test_ingest_missing_source_names_it(tmp_path):
    with pytest.raises(SourceError, match="source folder 'nope' does not exist"):
        ingest_sources(tmp_path, IngestParams(sources=["nope"]))


def test_ingest_ids_formats_and_outside_symlink(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.md").write_text("# A\n\nalpha")
    (src / "b.jsonl").write_text(json.dumps({"id": 7, "text": "seven"}) + "\n")
    (src / "ignored.csv").write_text("x,y")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", src / "link.txt")
    docs, stats = ingest_sources(tmp_path, IngestParams(sources=["src"]))
    by_id = {d.doc_id: d for d in docs}
    assert set(by_id) == {"sub/a.md", "b.jsonl#7", "link.txt"}
    assert by_id["link.txt"].status == "skipped" and by_id["link.txt"].text is None
    assert by_id["b.jsonl#7"].text == "seven" and to_record(by_id["sub/a.md"])["format"] == "markdown"
