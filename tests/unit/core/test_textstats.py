"""Text statistics behind `ragtune profile` (tasks/core/textstats.py), on small literal inputs."""

from __future__ import annotations

from tasks.core.textstats import answerability, boilerplate, distinct_ngrams, distribution, language_mix

FOOTER = "Copyright 2026 Larkspur Devices. All rights reserved."


def test_distribution_and_distinct_ngrams():
    d = distribution([5, 1, 3, 2, 4])
    assert d == {"count": 5, "mean": 3.0, "min": 1, "p50": 3, "p90": 5, "p99": 5, "max": 5}
    assert distribution([]) == {"count": 0}
    same = distinct_ngrams(["the cat sat", "the cat sat"])
    assert same == {"distinct_1": 0.5, "distinct_2": 0.5, "distinct_3": 0.5}
    assert distinct_ngrams(["a b c d"])["distinct_2"] == 1.0 and distinct_ngrams([""])["distinct_1"] is None


def test_boilerplate_counts_lines_repeated_across_documents():
    docs = [f"Article {i} explains one thing about heat pumps.\n{FOOTER}" for i in range(4)] + ["Unique text only."]
    bp = boilerplate(docs, min_docs=3)
    assert bp["top_lines"] == [{"line": FOOTER, "documents": 4}]
    assert abs(bp["share"] - 4 * len(FOOTER) / sum(len(d) for d in docs)) < 1e-3
    assert boilerplate(docs, min_docs=5)["share"] == 0.0


def test_language_mix_with_the_bundled_identifier():
    texts = [
        "The thermostat keeps the room warm and saves energy during the night.",
        "The heat pump switches to gas when the outside temperature drops below minus five degrees.",
        "Der Thermostat hält den Raum warm und spart nachts Energie.",
        "12345",
        "Ok.",  # too few letters to tell
    ]
    assert language_mix(texts, 2000) == {"en": 0.667, "de": 0.333}


def test_answerability_ignores_case_and_spacing_and_names_what_is_missing():
    rows = [
        {"question": "Allowance?", "answers": ["150  EUR"]},
        {"question": "Code?", "answers": ["HX-7734-Q"]},
        {"question": "Moon?", "answers": ["on the moon"]},
        {"question": "Five?", "answers": ["5"]},  # whole words only: not inside "150"
        {"question": "Only ids", "answers": [], "doc_ids": ["a.md"]},
    ]
    a = answerability(rows, ["The on-call allowance is 150 eur per week.", "Error hx-7734-q means reboot."])
    assert a == {"questions": 4, "answerable": 2, "share": 0.5, "not_found": ["Moon?", "Five?"]}
