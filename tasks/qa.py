"""Optional QA check for causal adapters: greedy answers to (question, answer) pairs, exact/contains match."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tasks.errors import SourceError


def read_qa(path: Path) -> list[dict]:
    if not path.is_file():
        raise SourceError(f"evaluate.qa_file: {path} does not exist. Give a JSONL file of "
                          '{"question": ..., "answer": ...} lines, or set evaluate.qa_file=null.')
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"{path}:{lineno}: not valid JSON ({exc.msg}).") from None
        if not isinstance(row, dict) or not str(row.get("question", "")).strip() or "answer" not in row:
            raise SourceError(f"{path}:{lineno}: needs non-empty 'question' and 'answer' fields.")
        rows.append({"question": str(row["question"]), "answer": str(row["answer"])})
    return rows


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s/{}.-]", " ", text.lower()).split()).strip(" .")


def score_qa(model, tokenizer, template: str, rows: list[dict], max_new_tokens: int,
             system_prompt: str | None = None) -> dict:
    """qa_exact: normalized answer == expected; qa_contains: the expected answer appears in the output."""
    import torch

    device = next(model.parameters()).device
    exact = contains = 0
    samples = []
    model.eval()
    for row in rows:
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": row["question"]}]
        prompt = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        got, want = normalize(answer), normalize(row["answer"])
        exact += got == want
        contains += bool(want) and want in got
        if len(samples) < 5:
            samples.append({"question": row["question"], "expected": row["answer"], "answer": answer})
    n = max(len(rows), 1)
    return {"qa_exact": round(exact / n, 4), "qa_contains": round(contains / n, 4), "qa_questions": len(rows),
            "qa_samples": samples}
