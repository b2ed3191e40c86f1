"""build_dataset: examples -> token ids with a loss mask, a deterministic train/eval split, optional packing.

- Chat/instruction examples are rendered with the tokenizer's own chat template (or dataset.fallback_template)
  and only assistant turns carry labels; the end-of-turn token is inside the trained span, so the model learns
  to stop. Raw text is concatenated and cut into max_length blocks. Labelled text becomes (ids, class id).
- The split hashes each example's content with the seed: an example stays in its split when data is added.
- Encoding is cached under data/cache/tokenized/<key>, the key covering data, tokenizer, template and the
  dataset params, so a changed tokenizer or template can never reuse stale ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.config import DatasetParams
from tasks.core.errors import ConfigError, GateFailed
from tasks.train.examples import Example

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("ragtune")
IGNORE = -100  # label id the loss skips


def tokenizer_fingerprint(tokenizer) -> str:
    body = tokenizer.backend_tokenizer.to_str() if getattr(tokenizer, "is_fast", False) else repr(tokenizer.get_vocab())
    specials = json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256((body + specials).encode()).hexdigest()[:16]


def encode_chat(tokenizer, template: str, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and labels that keep only assistant turns (end-of-turn included)."""

    def render(msgs, gen):
        return tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=gen)

    full = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, end = len(render(messages[:i], True)), len(render(messages[: i + 1], False))
        if not full.startswith(render(messages[: i + 1], False)):
            raise ConfigError(
                "the chat template does not render conversations prefix-stably (a turn changes the "
                "text before it), so assistant spans cannot be masked. Set dataset.fallback_template "
                "to a template without that behaviour (e.g. chatml)."
            )
        spans.append((start, end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [t if any(s <= a < e for s, e in spans) else IGNORE for t, (a, _) in zip(ids, enc["offset_mapping"])]
    return ids, labels


@dataclass
class Encoded:
    example_id: str
    content_hash: str
    input_ids: list[int]
    labels: list[int] | int  # per-token labels, or the class id for seq_cls
    n_tokens: int
    split_key: str = ""  # what the train/eval split hashes (qa/raft: the question); "" = content_hash


def encode(examples: list[Example], tokenizer, kind: str, template: str, label2id: dict[str, int]) -> list[Encoded]:
    """Token ids and labels per example; kind is the format's encoding (examples.encoding)."""
    out = []
    for ex in examples:
        key = ex.split_key
        if ex.problem:
            out.append(Encoded(ex.example_id, ex.content_hash, [], IGNORE, 0, key))
        elif kind in ("instruction", "chat"):
            ids, labels = encode_chat(tokenizer, template, ex.messages)
            out.append(Encoded(ex.example_id, ex.content_hash, ids, labels, len(ids), key))
        elif kind == "text":
            ids = tokenizer(ex.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            out.append(Encoded(ex.example_id, ex.content_hash, ids, list(ids), len(ids), key))
        else:
            ids = tokenizer(ex.text, add_special_tokens=True)["input_ids"]
            out.append(
                Encoded(ex.example_id, ex.content_hash, ids, label2id.get(ex.label or "", IGNORE), len(ids), key)
            )
    return out


def gate_table(examples: list[Example], encoded: list[Encoded], max_length: int) -> pd.DataFrame:
    seen: set[str] = set()
    dup = []
    for ex in examples:
        dup.append(ex.content_hash in seen)
        seen.add(ex.content_hash)
    import pandas as pd  # heavy (0.35 s): only the gate builds frames

    return pd.DataFrame(
        {
            "example_id": [e.example_id for e in examples],
            "problem": [e.problem for e in examples],
            "n_tokens": [e.n_tokens for e in encoded],
            "overlength": [e.n_tokens > max_length for e in encoded],
            "duplicate": dup,
            "label": [e.label or "" for e in examples],
        }
    )


def expectations(p: DatasetParams, fmt: str, name: str | None = None) -> list:
    """The GX suite for training examples (fmt: the encoding; name: the format, for messages); `meta.why` becomes
    the message a person reads."""
    import great_expectations.expectations as gxe

    exps = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=p.min_examples, meta={"why": f"fewer than dataset.min_examples={p.min_examples} examples"}
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="problem",
            value_set=[""],
            meta={"why": f"records missing the fields a '{name or fmt}' example needs"},
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_tokens",
            min_value=p.min_tokens,
            meta={"why": f"examples shorter than dataset.min_tokens={p.min_tokens} tokens"},
        ),
        gxe.ExpectColumnValuesToNotBeInSet(
            column="duplicate",
            value_set=[True],
            mostly=round(1 - p.max_duplicate_share, 6),
            meta={"share": "duplicate", "max_share": p.max_duplicate_share, "param": "dataset.max_duplicate_share"},
        ),
    ]
    if fmt != "text":  # raw text is cut into blocks, so long documents are fine
        exps.append(
            gxe.ExpectColumnValuesToNotBeInSet(
                column="overlength",
                value_set=[True],
                mostly=round(1 - p.max_overlength_share, 6),
                meta={
                    "share": "overlength",
                    "max_share": p.max_overlength_share,
                    "param": "dataset.max_overlength_share",
                },
            )
        )
    if fmt == "labelled":
        exps.append(
            gxe.ExpectColumnUniqueValueCountToBeBetween(
                column="label", min_value=2, meta={"why": "a classifier needs at least 2 distinct labels"}
            )
        )
        if p.labels:
            exps.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column="label", value_set=list(p.labels), meta={"why": f"labels outside dataset.labels={p.labels}"}
                )
            )
    return exps


def split_of(content_hash: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}:{content_hash}".encode()).hexdigest()[:12], 16) / 16**12


def split(encoded: list[Encoded], p: DatasetParams) -> tuple[list[Encoded], list[Encoded]]:
    """Drop duplicates (first kept), then a hash split: eval gets a share >= eval_share and >= min_eval_examples."""
    unique, seen = [], set()
    for e in encoded:
        if e.content_hash not in seen:
            seen.add(e.content_hash)
            unique.append(e)
    if p.eval_share == 0:
        return unique, []
    ranked = sorted(unique, key=lambda e: split_of(e.split_key or e.content_hash, p.seed))
    n_eval = max(
        sum(split_of(e.split_key or e.content_hash, p.seed) < p.eval_share for e in unique), p.min_eval_examples
    )
    if n_eval >= len(unique):
        raise GateFailed(
            f"dataset: {len(unique)} unique examples leave nothing to train on with "
            f"eval_share={p.eval_share}, min_eval_examples={p.min_eval_examples}. Add examples or "
            "lower those settings."
        )
    while (
        n_eval < len(ranked) and ranked[n_eval].split_key and ranked[n_eval].split_key == ranked[n_eval - 1].split_key
    ):
        n_eval += 1  # rows of one question (e.g. two answers) stay on one side of the cut
    eval_ids = {id(e) for e in ranked[:n_eval]}
    return [e for e in unique if id(e) not in eval_ids], [e for e in unique if id(e) in eval_ids]


def to_rows(items: list[Encoded], fmt: str, max_length: int, packing: bool) -> list[dict]:
    """Training rows: truncated sequences, text blocks, or packed bins with restarting position ids."""
    if fmt == "labelled":
        return [{"input_ids": e.input_ids[:max_length], "label": e.labels} for e in items]
    if fmt == "text":
        stream = [t for e in items for t in e.input_ids]
        return [
            {"input_ids": stream[i : i + max_length], "labels": stream[i : i + max_length]}
            for i in range(0, len(stream), max_length)
            if len(stream[i : i + max_length]) > 1
        ]
    rows = [{"input_ids": e.input_ids[:max_length], "labels": e.labels[:max_length]} for e in items]  # type: ignore[index]  # token labels here; an int only for labelled
    rows = [r for r in rows if any(t != IGNORE for t in r["labels"])]
    return pack(rows, max_length) if packing else rows


def pack(rows: list[dict], max_length: int) -> list[dict]:
    """First-fit decreasing into bins of max_length. position_ids restart per example, which transformers
    turns into a block-diagonal attention mask (no attention across examples) when no attention_mask is given."""
    bins: list[dict] = []
    for r in sorted(rows, key=lambda r: -len(r["input_ids"])):
        n = len(r["input_ids"])
        target = next((b for b in bins if len(b["input_ids"]) + n <= max_length), None)
        if target is None:
            target = {"input_ids": [], "labels": [], "position_ids": []}
            bins.append(target)
        target["input_ids"] += r["input_ids"]
        target["labels"] += r["labels"]
        target["position_ids"] += list(range(n))
    return bins


def cache_key(examples: list[Example], tok_fp: str, template: str, fmt: str, p: DatasetParams, task: str) -> str:
    body = json.dumps(
        {
            "data": [e.content_hash for e in examples],
            "ids": [e.example_id for e in examples],
            "tokenizer": tok_fp,
            "template": template,
            "format": fmt,
            "task": task,
            "params": p.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:20]


def load_cached(path: Path) -> list[Encoded] | None:
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as f:
        return [Encoded(**json.loads(line)) for line in f if line.strip()]
