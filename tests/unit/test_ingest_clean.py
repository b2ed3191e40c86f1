import json
import os

import pytest

from tasks.core.config import CleanParams, IngestParams
from tasks.core.errors import SourceError
from tasks.kb.clean import clean_documents, html_to_text, normalize_text
from tasks.kb.ingest import ingest_sources, to_record
from tasks.kb.readers import decode_jsonl_documents, decode_text


def test_decode_utf8_latin1_and_binary():
    assert decode_text("Zürich".encode())[0] == "Zürich"
    text, enc, _ = decode_text("Notes from the installer training in Köln, Jürgen Weiß.".encode("latin-1"))
    assert "Köln" in text and enc != "utf-8"
    text, _, reason = decode_text(b"\x00\x01binary\x00")
    assert text is None and "binary" in reason


def test_jsonl_bad_lines_are_recorded_not_fatal():
    rows = decode_jsonl_documents('{"id": "a", "text": "hello"}\nnot json\n[1]\n{"id": "b"}\n', "text", "id")
    assert [(r.key, r.status) for r in rows] == [
        ("a", "ok"),
        ("L2", "undecodable"),
        ("L3", "undecodable"),
        ("b", "undecodable"),
    ]
    assert "not JSON" in rows[1].reason and "no 'text' field" in rows[3].reason


def test_html_boilerplate_and_scripts_are_removed():
    html = (
        "<html><head><script>track()</script><style>p{}</style></head><body><nav>Home | Shop</nav>"
        "<article><h1>Reset</h1><p>Hold the dial for fifteen seconds to reset the thermostat to factory "
        "settings. It forgets its schedule.</p></article><footer>Copyright Larkspur</footer></body></html>"
    )
    text = html_to_text(html)
    assert "Hold the dial" in text and "# Reset" in text
    assert "track()" not in text and "Home | Shop" not in text and "Copyright" not in text
    assert html_to_text("<html><head><script>x()</script></head><body></body></html>") == ""


def test_normalize_repairs_mojibake_and_whitespace():
    assert normalize_text("caf\u00c3\u00a9   au\t lait\n\n\n\nnext  ") == "café au lait\n\nnext"


def raw(doc_id, text, status="ok", fmt="text"):
    return {
        "doc_id": doc_id,
        "source": "s",
        "path": doc_id,
        "format": fmt,
        "status": status,
        "reason": "" if status == "ok" else "bad bytes",
        "text": text,
    }


def test_clean_drops_empty_and_duplicates_with_reasons():
    docs = [
        raw("a.txt", "The same text, long enough to keep."),
        raw("b.txt", "The  same text, long enough to keep."),
        raw("c.txt", "   "),
        raw("d.txt", None, status="undecodable"),
    ]
    kept, drops, stats = clean_documents(docs, CleanParams())
    assert [d.doc_id for d in kept] == ["a.txt"]
    reasons = {d.doc_id: (d.status, d.reason) for d in drops}
    assert reasons["b.txt"] == ("duplicate", "same content as a.txt")
    assert reasons["c.txt"][0] == "empty" and reasons["d.txt"] == ("undecodable", "bad bytes")
    assert stats["dropped"] == {"duplicate": 1, "empty": 1, "undecodable": 1}


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
