"""RAFT examples from the knowledge base (Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG").

Each training question gets the passages it would see at answering time: its oracle chunk (the one holding the
answer) plus dataset.raft.distractors chunks from the index, in a shuffled order, and the short answer as the
target. In a share (1 - oracle_share) of examples the oracle is replaced by one more distractor, so the model
also learns to answer when retrieval misses and to rely on the passages when it does not. The prompt is
qa.context_message, the same function `ask` and `compare` use.

Distractors are the question's own retrieved hits that do not hold the answer ("hard" distractors, like the
mistakes retrieval makes), topped up with other chunks when retrieval returns too few. Choices are seeded by
(dataset.seed, question), so the same data and index give the same examples.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core.config import Params, RaftParams
from tasks.core.errors import SourceError
from tasks.core.qa import normalize_passage
from tasks.core.stage import OnProgress
from tasks.core.workspace import Layout, file_digest, read_json, read_jsonl
from tasks.kb.retrieval import Retriever
from tasks.lm.generate import context_message
from tasks.train.examples import Example, question_hash

Search = Callable[[str, int], list[dict]]


def holds_answer(text: str, answers: list[str]) -> bool:
    """Whether a passage states an answer, on word boundaries ("71 %" is not in "171 %")."""
    body = normalize_passage(text)
    return any(
        re.search(rf"(?<!\w){re.escape(normalize_passage(a))}(?!\w)", body) for a in answers if normalize_passage(a)
    )


def pick_oracle(qa: dict, hits: list[dict], chunks: list[dict]) -> tuple[dict | None, str]:
    """The chunk holding the answer: first from the row's doc_ids, then among the hits, then anywhere."""
    answers, docs = qa["answers"], set(qa["doc_ids"])
    for where, pool in (
        ("doc_ids", [c for c in chunks if c["doc_id"] in docs]),
        ("retrieved", hits),
        ("corpus", chunks),
    ):
        found = next((c for c in pool if holds_answer(c["text"], answers)), None)
        if found is not None:
            return found, where
    return None, "none"


def pick_distractors(
    qa: dict, hits: list[dict], chunks: list[dict], n: int, rng: random.Random, exclude: dict | None
) -> list[dict]:
    """n chunks without the answer: retrieved ones first (in rank order), then random others."""
    taken = {_key(exclude)} if exclude else set()
    out: list[dict] = []
    for c in hits:
        if len(out) == n:
            return out
        if _key(c) not in taken and not holds_answer(c["text"], qa["answers"]):
            taken.add(_key(c))
            out.append(c)
    others = [c for c in chunks if _key(c) not in taken and not holds_answer(c["text"], qa["answers"])]
    return out + rng.sample(others, min(n - len(out), len(others)))


def _key(chunk: dict) -> tuple:
    return chunk["doc_id"], chunk.get("position")


def quote(text: str, answers: list[str]) -> str:
    """The sentence of a passage that holds the answer (RAFT's quoted evidence)."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return next((s for s in sentences if holds_answer(s, answers)), sentences[0])


def raft_example(
    ex: Example, oracle: dict | None, distractors: list[dict], p: RaftParams, seed: int, system_prompt: str | None
) -> tuple[Example, bool]:
    """One RAFT example and whether its passages include the oracle."""
    qa = ex.qa
    assert qa is not None  # RAFT examples are built from QA rows
    rng = random.Random(f"{seed}:{question_hash(qa['question'])}")
    keep = oracle is not None and rng.random() < p.oracle_share
    passages = ([oracle] if keep and oracle is not None else []) + distractors[: p.distractors + (0 if keep else 1)]
    rng.shuffle(passages)
    target = qa["answers"][0]
    if keep and oracle is not None and p.quote:
        n = passages.index(oracle) + 1
        target += f'\n\nEvidence: [{n}] "{quote(oracle["text"], qa["answers"])}"'
    user = context_message(qa["question"], passages)
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": target},
    ]
    return Example(example_id=ex.example_id, format="raft", messages=messages, qa=qa), keep


def build_raft(
    examples: list[Example],
    search: Search,
    chunks: list[dict],
    p: RaftParams,
    seed: int,
    system_prompt: str | None,
    on_progress: OnProgress = None,
) -> tuple[list[Example], dict]:
    """RAFT examples for every usable QA example (unusable ones pass through for the gate to report)."""
    out: list[Example] = []
    stats: dict[str, Any] = {"with_oracle": 0, "without_oracle": 0, "oracle_found": {}}
    for i, ex in enumerate(examples, 1):
        if ex.problem:
            out.append(ex)
            continue
        qa = ex.qa
        assert qa is not None  # a QA example without a problem has its row
        hits = search(qa["question"], p.distractors + 8)
        oracle, where = pick_oracle(qa, hits, chunks)
        stats["oracle_found"][where] = stats["oracle_found"].get(where, 0) + 1
        rng = random.Random(f"{seed}:distractors:{question_hash(qa['question'])}")
        distractors = pick_distractors(qa, hits, chunks, p.distractors + 1, rng, oracle)
        made, kept = raft_example(ex, oracle, distractors, p, seed, system_prompt)
        stats["with_oracle" if kept else "without_oracle"] += 1
        out.append(made)
        if on_progress:
            on_progress(i, len(examples))
    return out, stats


def kb_version(ws: Layout) -> dict:
    """Which knowledge base an adapter learned from: the index run (tag kb/<run_version>) and content hashes."""
    if not ws.chunks.is_file():
        return {}
    out: dict[str, Any] = {"chunks_sha256": file_digest(ws.chunks)[:16]}
    if ws.index_manifest.is_file():
        out["manifest_sha256"] = file_digest(ws.index_manifest)[:16]
    if ws.stage_metrics("index").is_file():
        run = read_json(ws.stage_metrics("index"), "index").get("run_version")
        out.update(run_version=run, kb_tag=f"kb/{run}" if run else None)
    return out


def raft_from_index(
    ws: Layout, params: Params, examples: list[Example], on_progress: OnProgress = None
) -> tuple[list[Example], dict]:
    """RAFT examples with passages from the live index (retrieve: section settings)."""
    if not ws.chunks.is_file() or not ws.index_manifest.is_file():
        raise SourceError(
            f"dataset.format=raft puts passages from the index into each example, but there is no "
            f"index yet ({ws.index_manifest} is missing). Run `ragtune refresh` first, or use "
            "dataset.format=qa (questions without passages)."
        )
    chunks = read_jsonl(ws.chunks, "chunk")
    with Retriever(Path(ws.root), params) as retriever:
        retriever.warm()
        return build_raft(
            examples,
            retriever.search,
            chunks,
            params.dataset.raft,
            params.dataset.seed,
            params.dataset.system_prompt,
            on_progress,
        )
