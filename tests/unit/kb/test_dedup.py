"""Near-duplicate documents with real datasketch MinHash/LSH (tasks/kb/dedup.py, through clean_documents)."""

from __future__ import annotations

import random
from dataclasses import asdict

from tasks.core.config import CleanParams
from tasks.kb.clean import clean_documents
from tasks.kb.dedup import NearDuplicates, shingles
from tasks.kb.validate import build_tables

WORDS = [f"{a}{b}" for a in ("heron", "dial", "pump", "valve", "sensor", "relay", "board", "panel") for b in "aeiouyrs"]


def article(seed: int, n_words: int = 400) -> str:
    """A deterministic 'article': sentences of 8-14 words, a paragraph every 5 sentences."""
    rng = random.Random(seed)
    sentences, words = [], 0
    while words < n_words:
        k = rng.randrange(8, 15)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".")
        words += k
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


def raw(doc_id: str, text: str, fmt: str = "markdown") -> dict:
    return {"doc_id": doc_id, "source": "s", "path": doc_id, "format": fmt, "status": "ok", "reason": "", "text": text}


def edited(text: str, n: int, seed: int = 3) -> str:
    """`text` with n words replaced."""
    rng = random.Random(seed)
    words = text.split(" ")
    for i in rng.sample(range(len(words)), n):
        words[i] = "edited"
    return " ".join(words)


BANNER = "Archived copy saved from the old support portal. Some links may no longer work.\n\n"
FOOTER = "\n\nCopyright 2024 Larkspur Devices. All rights reserved. Privacy policy | Terms of use | Contact us"


def test_the_same_article_under_other_boilerplate_and_with_small_edits_is_dropped_naming_the_kept_copy():
    base = article(1)
    docs = [
        raw("a/original.md", base),
        raw("b/archived.md", BANNER + base + FOOTER),
        raw("c/edited.md", edited(base, 6)),
        raw("d/other.md", article(2)),  # another article from the same vocabulary
        raw("e/shares-a-paragraph.md", base.split("\n\n")[0] + "\n\n" + article(3)),
    ]
    kept, drops, stats = clean_documents(docs, CleanParams())
    assert [d.doc_id for d in kept] == ["a/original.md", "d/other.md", "e/shares-a-paragraph.md"]
    reasons = {d.doc_id: (d.status, d.reason) for d in drops}
    for doc_id in ("b/archived.md", "c/edited.md"):
        status, reason = reasons[doc_id]
        assert status == "duplicate"  # so the GX gate's duplicate share counts it
        assert reason.startswith("near-duplicate of a/original.md (estimated Jaccard 0.")
        assert "clean.near_duplicate_threshold=0.8" in reason
    assert stats["near_duplicates"] == 2 and stats["dropped"] == {"duplicate": 2}
    _, inputs = build_tables([asdict(d) for d in kept], [asdict(d) for d in drops])
    assert (inputs["status"] == "duplicate").mean() == 2 / 5  # the gate's validate.max_duplicate_share counts them


def test_the_threshold_is_the_knob_and_null_keeps_exact_matching_only():
    base = article(1)
    docs = [raw("a.md", base), raw("b.md", BANNER + base + FOOTER), raw("c.md", base)]
    strict, drops, _ = clean_documents(docs, CleanParams(near_duplicate_threshold=0.99))
    assert [d.doc_id for d in strict] == ["a.md", "b.md"] and drops[0].reason == "same content as a.md"
    off, _, stats = clean_documents(docs, CleanParams(near_duplicate_threshold=None))
    assert [d.doc_id for d in off] == ["a.md", "b.md"] and stats["near_duplicates"] == 0


def test_html_pages_whose_main_text_is_the_same_are_near_duplicates():
    body = "".join(f"<p>{p}</p>" for p in article(4).split("\n\n"))
    page_a = f"<html><body><nav>Home | Products</nav><article><h1>Pump care</h1>{body}</article></body></html>"
    page_b = (
        "<html><body><header>Larkspur shop - cart - login</header><article><h1>Pump care</h1>"
        f"{body}<p>Updated on 3 March.</p></article><footer>Imprint</footer></body></html>"
    )
    kept, drops, _ = clean_documents([raw("a.html", page_a, "html"), raw("b.html", page_b, "html")], CleanParams())
    assert [d.doc_id for d in kept] == ["a.html"] and drops[0].reason.startswith("near-duplicate of a.html")


def test_decisions_are_deterministic_and_name_the_earlier_copy():
    base, copy = article(5), edited(article(5), 3)
    runs = []
    for _ in range(2):
        nd = NearDuplicates(0.8)
        assert nd.check("a", base) is None and nd.check("z", article(6)) is None
        runs.append(nd.check("c", copy))
    assert runs[0] == runs[1] and runs[0] is not None and runs[0][0] == "a" and 0.8 <= runs[0][1] < 1


def test_shingles():
    assert shingles("One two three four five six", 5) == {b"one two three four five", b"two three four five six"}
    assert shingles("Just three words", 5) == {b"just three words"}
