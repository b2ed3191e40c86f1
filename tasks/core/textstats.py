"""Text statistics for `ragtune profile`: length distributions, n-gram diversity, boilerplate, language mix and
whether answers occur in the knowledge base. Pure functions over lists of strings."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from tasks.core.qa import normalize_passage

WORD = re.compile(r"\w+")
LETTER = re.compile(r"[^\W\d_]")
MIN_LINE_CHARS = 20  # shorter repeated lines (headings like "Overview") are structure, not boilerplate
MAX_WORDS = 5_000_000  # distinct-n is measured on at most this many words (a few hundred MB of hashes)
MIN_LETTERS = 30  # shorter texts get no language: the identifier guesses on a few letters


def distribution(values: list[int]) -> dict:
    """count, mean and percentiles (nearest rank) of a list of lengths."""
    if not values:
        return {"count": 0}
    v = sorted(values)

    def pct(p: float) -> int:
        return v[min(len(v) - 1, int(p * len(v)))]

    return {
        "count": len(v),
        "mean": round(sum(v) / len(v), 1),
        "min": v[0],
        "p50": pct(0.5),
        "p90": pct(0.9),
        "p99": pct(0.99),
        "max": v[-1],
    }


def distinct_ngrams(texts: Iterable[str], ns: tuple[int, ...] = (1, 2, 3), max_words: int = MAX_WORDS) -> dict:
    """Distinct n-grams / all n-grams (distinct-n): near 0 is repetitive, near 1 varied. N-grams are kept as
    hashes, over the first max_words words, so a large corpus costs bounded memory."""
    seen: dict[int, set[int]] = {n: set() for n in ns}
    total = dict.fromkeys(ns, 0)
    words_read = 0
    for text in texts:
        words = WORD.findall(text.lower())[: max_words - words_read]
        words_read += len(words)
        for n in ns:
            grams = [hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)]
            total[n] += len(grams)
            seen[n].update(grams)
        if words_read >= max_words:
            break
    out: dict = {f"distinct_{n}": round(len(seen[n]) / total[n], 3) if total[n] else None for n in ns}
    return out | ({"distinct_over_words": words_read} if words_read >= max_words else {})


def boilerplate(texts: list[str], min_docs: int, top: int = 5) -> dict:
    """Share of characters in lines that recur in at least min_docs documents (footers, banners, navigation)."""
    docs_with: Counter[str] = Counter()
    for text in texts:
        docs_with.update({line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_LINE_CHARS})
    repeated = {line for line, n in docs_with.items() if n >= min_docs}
    total = sum(len(t) for t in texts)
    chars = sum(len(line.strip()) for t in texts for line in t.splitlines() if line.strip() in repeated)
    common = sorted(repeated, key=lambda line: (-docs_with[line], line))[:top]
    return {
        "share": round(chars / total, 3) if total else 0.0,
        "top_lines": [{"line": line[:100], "documents": docs_with[line]} for line in common],
    }


def language_mix(texts: list[str], sample_chars: int) -> dict[str, float]:
    """Share of texts per language (ISO 639-1), by py3langid on each text's first sample_chars characters."""
    import py3langid

    sampled = [t[:sample_chars] for t in texts]
    counts = Counter(py3langid.classify(t)[0] for t in sampled if len(LETTER.findall(t)) >= MIN_LETTERS)
    n = sum(counts.values())
    return {lang: round(c / n, 3) for lang, c in counts.most_common()} if n else {}


def answerability(rows: list[dict], passages: Iterable[str], sample: int = 5) -> dict:
    """How many QA rows have an answer string inside some passage (case and spacing ignored): what retrieval
    could find at best. Rows without answers are not counted."""
    haystack = "\n\x00\n".join(normalize_passage(p) for p in passages)
    with_answers = [r for r in rows if r.get("answers")]
    missing = [r["question"] for r in with_answers if not any(_found(a, haystack) for a in r["answers"])]
    n = len(with_answers)
    return {
        "questions": n,
        "answerable": n - len(missing),
        "share": round((n - len(missing)) / n, 3) if n else None,
        "not_found": missing[:sample],
    }


def _found(answer: str, haystack: str) -> bool:
    """The normalized answer as whole words of the haystack ("5" is not found in "150")."""
    needle = normalize_passage(answer)
    return bool(needle) and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None
