"""HTML to text, unicode repair, drops with reasons (tasks/kb/clean.py)."""

from tasks.core.config import CleanParams
from tasks.kb.clean import clean_documents, html_to_text, normalize_text


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
