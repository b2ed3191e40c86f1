"""Generation: the RAG prompt, batched greedy completions, and closed-book QA scoring of a model."""

from __future__ import annotations

from tasks.core.qa import squad_scores
from tasks.lm.templates import chat_prompt_ids

INSTRUCTION = (
    "Answer the question using the numbered passages below. Cite the passages you use as [n]. "
    "If they do not contain the answer, say so."
)


def context_message(question: str, passages: list[dict]) -> str:
    """The RAG user turn: instruction, numbered passages (with their document), question. Training (raft) and
    answering use this one function, so an adapter sees at inference exactly the prompt it was trained on."""
    blocks = [
        f"[{i}] ({p.get('doc_id') or p['source']}) {' '.join(p['text'].split())}" for i, p in enumerate(passages, 1)
    ]
    return f"{INSTRUCTION}\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


def generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0) -> str:
    """One completion; greedy (deterministic) at temperature 0."""
    return generate_batch(model, tokenizer, [prompt_ids], max_new_tokens, temperature)[0]


def generate_batch(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0
) -> list[str]:
    """Completions of several prompts in one generate call: left padding (so every row ends at its prompt),
    KV cache, inference mode. Greedy answers equal one-at-a-time greedy answers up to float rounding."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    sampling = (
        {"do_sample": True, "temperature": temperature}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            use_cache=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad,
            **sampling,
        )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def score_qa(
    model,
    tokenizer,
    template: str,
    rows: list[dict],
    max_new_tokens: int,
    system_prompt: str | None = None,
    batch_size: int = 8,
) -> dict:
    """Closed-book answers to the QA file, scored like SQuAD: qa_exact, qa_f1, qa_contains (means over rows)."""
    model.eval()
    prompts = [chat_prompt_ids(tokenizer, template, row["question"], system_prompt) for row in rows]
    answers = [
        a
        for i in range(0, len(prompts), batch_size)
        for a in generate_batch(model, tokenizer, prompts[i : i + batch_size], max_new_tokens)
    ]
    scores = [squad_scores(a, row["answers"]) for a, row in zip(answers, rows)]
    n = max(len(rows), 1)
    samples = [{"question": r["question"], "expected": r["answers"][0], "answer": a} for r, a in zip(rows[:5], answers)]
    return {
        **{f"qa_{k}": round(sum(s[k] for s in scores) / n, 4) for k in ("exact", "f1", "contains")},
        "qa_questions": len(rows),
        "qa_samples": samples,
    }
