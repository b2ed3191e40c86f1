"""QA files, prompts and answer scoring: read {question, answers/answer, doc_ids} JSONL, build the RAG prompt,
generate greedily in batches, score like SQuAD.

One reader serves the retrain QA check (evaluate.qa_file), `eval-retrieval`, the kb_refresh retrieval gate,
`compare` and the qa/raft training formats. A row gives `question` plus `answers` (strings; `answer` also works)
and/or `doc_ids`.

Scoring follows the SQuAD v1.1 script, which the field quotes: lower-case, drop punctuation and the articles
a/an/the, collapse spaces; exact match (EM) and token F1 take the best over the gold answers. `contains` (the
normalized gold answer appears in the normalized prediction) credits a right answer inside a sentence.
"""

from __future__ import annotations

import collections
import re
import string
from pathlib import Path

from tasks.core.errors import SourceError
from tasks.core.jsonl import json_objects


def read_qa_set(path: Path, field: str = "--qa", need_answers: bool = False) -> list[dict]:
    """Rows of {question, answers: [str], doc_ids: [str]}; a bad line is an error naming file, line and fix."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(
            f"{field}: {path} does not exist. Give a JSONL file with one "
            '{"question": ..., "answers": [...], "doc_ids": [...]} object per line.'
        )
    rows = []
    for lineno, row in json_objects(path.read_text(encoding="utf-8").splitlines(), str(path)):
        if not str(row.get("question", "")).strip():
            raise SourceError(f"{path}:{lineno}: needs a non-empty 'question' field.")
        answers = row.get("answers", [row["answer"]] if "answer" in row else [])
        doc_ids = row.get("doc_ids", [])
        answers = [answers] if isinstance(answers, str) else answers
        if (
            not isinstance(answers, list)
            or not isinstance(doc_ids, list)
            or not all(isinstance(x, str) and x.strip() for x in answers + doc_ids)
        ):
            raise SourceError(f"{path}:{lineno}: 'answers' and 'doc_ids' must be lists of non-empty strings.")
        if not answers and (need_answers or not doc_ids):
            what = "'answers' (or 'answer')" if need_answers else "'answers' and/or 'doc_ids'"
            raise SourceError(f"{path}:{lineno}: needs {what}, so there is something to score against.")
        rows.append({"question": str(row["question"]), "answers": answers, "doc_ids": doc_ids})
    if not rows:
        raise SourceError(f"{field}: {path} holds no questions.")
    return rows


def read_qa(path: Path) -> list[dict]:
    """evaluate.qa_file for the retrain QA check: every row needs an answer."""
    return read_qa_set(path, "evaluate.qa_file", need_answers=True)


PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD normalization: lower-case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCT)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def normalize_passage(text: str) -> str:
    """Looser normalization for "does this passage hold the answer" (retrieval relevance): case and spaces
    only, so codes and times keep their separators (HX-7734-Q, 10:00-15:00)."""
    return " ".join(re.sub(r"[^\w\s/{}.-]", " ", text.lower()).split()).strip(" .")


def token_f1(prediction: str, gold: str) -> float:
    pred, want = normalize(prediction).split(), normalize(gold).split()
    common = sum((collections.Counter(pred) & collections.Counter(want)).values())
    if not pred or not want:
        return float(pred == want)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(want)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, golds: list[str]) -> dict:
    """EM, token F1 and contains (the gold's tokens appear in a row), each the best over the gold answers."""
    got = normalize(prediction)
    wants = [normalize(g) for g in golds if normalize(g)]
    return {
        "exact": float(any(got == w for w in wants)),
        "f1": max((token_f1(prediction, g) for g in golds if normalize(g)), default=0.0),
        "contains": float(any(f" {w} " in f" {got} " for w in wants)),
    }  # whole tokens: "5" is not in "15"
