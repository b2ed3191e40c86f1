"""QA files and answer scoring: read {question, answers/answer, doc_ids} JSONL, greedy generation, exact/contains.

One reader serves the retrain QA check (evaluate.qa_file), `eval-retrieval`, the kb_refresh retrieval gate and
`compare`. A row gives `question` plus `answers` (strings; `answer` also works) and/or `doc_ids`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tasks.errors import SourceError


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


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s/{}.-]", " ", text.lower()).split()).strip(" .")


def match(answer: str, expected: list[str]) -> tuple[bool, bool]:
    """(exact, contains) after normalizing case, punctuation and spaces, against any expected answer."""
    got = normalize(answer)
    wants = [normalize(e) for e in expected if normalize(e)]
    return any(got == w for w in wants), any(w in got for w in wants)


def generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0) -> str:
    """One completion; greedy (deterministic) at temperature 0."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def chat_prompt_ids(tokenizer, template: str, user: str, system_prompt: str | None = None) -> list[int]:
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}]
    prompt = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def score_qa(model, tokenizer, template: str, rows: list[dict], max_new_tokens: int,
             system_prompt: str | None = None) -> dict:
    """qa_exact: normalized answer == expected; qa_contains: the expected answer appears in the output."""
    exact = contains = 0
    samples = []
    model.eval()
    for row in rows:
        answer = generate(model, tokenizer, chat_prompt_ids(tokenizer, template, row["question"], system_prompt),
                          max_new_tokens)
        e, c = match(answer, row["answers"])
        exact += e
        contains += c
        if len(samples) < 5:
            samples.append({"question": row["question"], "expected": row["answers"][0], "answer": answer})
    n = max(len(rows), 1)
    return {"qa_exact": round(exact / n, 4), "qa_contains": round(contains / n, 4), "qa_questions": len(rows),
            "qa_samples": samples}
