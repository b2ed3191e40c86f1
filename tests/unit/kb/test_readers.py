"""Decoding bytes and JSONL document files (tasks/kb/readers.py)."""

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
