"""Retrieval quality on a QA set: recall@k, MRR@k and latency, and the kb_refresh gate built on them.

A retrieved chunk is relevant to a row when it meets every criterion the row gives: its doc_id is one of
`doc_ids`, and its text contains one of `answers` (case-, punctuation- and space-insensitive).
  recall@k  rows with doc_ids: the share of those documents found among the relevant chunks in the top k;
            rows with answers only: 1 when any top-k chunk is relevant, else 0. Averaged over rows.
  MRR@k     1 / rank of the first relevant chunk in the top k (0 when none), averaged over rows.
"""

from __future__ import annotations

import math

from tasks.core.qa import normalize_passage as normalize
from tasks.kb.retrieval import Retriever, without_query_cache


def relevant(hit: dict, row: dict) -> bool:
    if row["doc_ids"] and hit.get("doc_id") not in row["doc_ids"]:
        return False
    if row["answers"]:
        text = normalize(hit.get("text") or "")
        return any(normalize(a) in text for a in row["answers"])
    return True


def score_row(hits: list[dict], row: dict, k: int) -> tuple[float, float]:
    """(recall@k, reciprocal rank@k) of one ranked hit list."""
    ranks = [r for r, h in enumerate(hits[:k], 1) if relevant(h, row)]
    if row["doc_ids"]:
        found = {hits[r - 1]["doc_id"] for r in ranks}
        recall = len(found) / len(set(row["doc_ids"]))
    else:
        recall = 1.0 if ranks else 0.0
    return recall, (1.0 / ranks[0] if ranks else 0.0)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _round1(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def latency(ms: list[float]) -> dict:
    return {
        "p50_ms": _round1(percentile(ms, 50)),
        "p95_ms": _round1(percentile(ms, 95)),
    }


def evaluate(search, rows: list[dict], k: int, on_progress=None) -> dict:
    """search(question, k) -> (hits, milliseconds). Averages, latency and the questions that found nothing."""
    recalls, rrs, ms, misses = [], [], [], []
    for i, row in enumerate(rows, 1):
        hits, took = search(row["question"], k)
        recall, rr = score_row(hits, row, k)
        recalls.append(recall)
        rrs.append(rr)
        ms.append(took)
        if rr == 0:
            misses.append(row["question"])
        if on_progress:
            on_progress(i, len(rows))
    n = len(rows)
    return {
        "k": k,
        "questions": n,
        f"recall_at_{k}": round(sum(recalls) / n, 4),
        f"mrr_at_{k}": round(sum(rrs) / n, 4),
        **latency(ms),
        "missed": misses,
    }


def evaluate_modes(
    root, params, rows: list[dict], modes: list[str], k: int, progress=None, staged: str | None = None
) -> list[dict]:
    """Each retrieval mode on the QA rows with warm models and no query cache, so latencies compare across modes.
    staged=<run_version> reads the index that run staged (the recall gate before serving)."""
    uncached = without_query_cache(params)
    results = []
    for mode in modes:
        with Retriever(root, uncached, mode, staged=staged) as r:
            r.warm()
            bar = progress(mode) if progress else None  # progress(label) -> (done, total) callback
            results.append({"mode": mode, **evaluate(r.timed_search, rows, k, bar)})
    return results


def gate(current: dict, previous: dict | None, max_drop: float) -> tuple[bool, str]:
    """Pass unless recall fell more than max_drop below the last passing run on the same QA set and k."""
    key = f"recall_at_{current['k']}"
    if previous is None:
        return True, f"{key} {current[key]:.4f}: first evaluation on this QA set, it becomes the baseline"
    if (
        previous.get("qa_sha256") != current.get("qa_sha256")
        or previous.get("k") != current["k"]
        or previous.get("mode") != current.get("mode")
    ):
        return True, (
            f"{key} {current[key]:.4f}: the QA set, k or mode changed since the last evaluation, "
            "so this run becomes the new baseline"
        )
    drop = previous[key] - current[key]
    if drop > max_drop:
        return False, (
            f"{key} fell from {previous[key]:.4f} (run {previous.get('run_version')}) to "
            f"{current[key]:.4f}, a drop of {drop:.4f} > retrieve.max_recall_drop={max_drop}"
        )
    return True, f"{key} {current[key]:.4f} vs {previous[key]:.4f} before (allowed drop {max_drop})"
