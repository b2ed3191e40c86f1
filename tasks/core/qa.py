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
import json
import re
import string
from pathlib import Path

from tasks.core.errors import SourceError


def read_qa_set(path: Path, field: str = "--qa", need_answers: bool = False) -> list[dict]:
    """Rows of {question, answers: [str], doc_ids: [str]}; a bad line is an error naming file, line and fix."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{field}: {path} does not exist. Give a JSONL file with one "
                          '{"question": ..., "answers": [...], "doc_ids": [...]} object per line.')
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or remove the line.") from None
        if not isinstance(row, dict) or not str(row.get("question", "")).strip():
            raise SourceError(f"{path}:{lineno}: needs a non-empty 'question' field.")
        answers = row.get("answers", [row["answer"]] if "answer" in row else [])
        doc_ids = row.get("doc_ids", [])
        answers = [answers] if isinstance(answers, str) else answers
        if not isinstance(answers, list) or not isinstance(doc_ids, list) \
                or not all(isinstance(x, str) and x.strip() for x in answers + doc_ids):
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
INSTRUCTION = ("Answer the question using the numbered passages below. Cite the passages you use as [n]. "
               "If they do not contain the answer, say so.")


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
    return {"exact": float(any(got == w for w in wants)),
            "f1": max((token_f1(prediction, g) for g in golds if normalize(g)), default=0.0),
            "contains": float(any(f" {w} " in f" {got} " for w in wants))}  # whole tokens: "5" is not in "15"


def context_message(question: str, passages: list[dict]) -> str:
    """The RAG user turn: instruction, numbered passages (with their document), question. Training (raft) and
    answering use this one function, so an adapter sees at inference exactly the prompt it was trained on."""
    blocks = [f"[{i}] ({p.get('doc_id') or p['source']}) {' '.join(p['text'].split())}"
              for i, p in enumerate(passages, 1)]
    return f"{INSTRUCTION}\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


def generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0) -> str:
    """One completion; greedy (deterministic) at temperature 0."""
    return generate_batch(model, tokenizer, [prompt_ids], max_new_tokens, temperature)[0]


def generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
                   temperature: float = 0.0) -> list[str]:
    """Completions of several prompts in one generate call: left padding (so every row ends at its prompt),
    KV cache, inference mode. Greedy answers equal one-at-a-time greedy answers up to float rounding."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, use_cache=True,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, **sampling)
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def chat_prompt_ids(tokenizer, template: str, user: str, system_prompt: str | None = None) -> list[int]:
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}]
    prompt = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def score_qa(model, tokenizer, template: str, rows: list[dict], max_new_tokens: int,
             system_prompt: str | None = None, batch_size: int = 8) -> dict:
    """Closed-book answers to the QA file, scored like SQuAD: qa_exact, qa_f1, qa_contains (means over rows)."""
    model.eval()
    prompts = [chat_prompt_ids(tokenizer, template, row["question"], system_prompt) for row in rows]
    answers = [a for i in range(0, len(prompts), batch_size)
               for a in generate_batch(model, tokenizer, prompts[i:i + batch_size], max_new_tokens)]
    scores = [squad_scores(a, row["answers"]) for a, row in zip(answers, rows)]
    n = max(len(rows), 1)
    samples = [{"question": r["question"], "expected": r["answers"][0], "answer": a}
               for r, a in zip(rows[:5], answers)]
    return {**{f"qa_{k}": round(sum(s[k] for s in scores) / n, 4) for k in ("exact", "f1", "contains")},
            "qa_questions": len(rows), "qa_samples": samples}
