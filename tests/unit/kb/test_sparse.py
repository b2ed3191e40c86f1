"""BM25 terms and weights (tasks/kb/sparse.py)."""

from __future__ import annotations

from tasks.kb.sparse import encode_document, encode_query, term_id, terms


def test_sparse_terms_keep_product_codes_whole_and_split():
    assert terms("The Heron Pro (HX-7734-Q) is certified") == [
        "heron",
        "pro",
        "hx-7734-q",
        "hx",
        "7734",
        "q",
        "certified",
    ]
    idx, val = encode_query("HX-7734-Q? hx-7734-q")
    assert idx == sorted({term_id("hx-7734-q"), term_id("hx"), term_id("7734"), term_id("q")}) and set(val) == {1.0}
    assert encode_query("what is the") == ([], [])


def test_sparse_document_weights_saturate_and_are_deterministic():
    one = dict(zip(*encode_document("valve " + "filler " * 10)))
    three = dict(zip(*encode_document("valve valve valve " + "filler " * 8)))
    v = term_id("valve")
    assert one[v] < three[v] < 2.2, "BM25 tf saturates below k1 + 1"
    assert encode_document("same text here") == encode_document("same text here")
