"""Chunk: split cleaned documents into token-bounded chunks that respect headings and paragraphs."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from semantic_text_splitter import MarkdownSplitter

from tasks.core.config import ChunkParams
from tasks.core.errors import ConfigError
from tasks.core.stage import OnProgress

CHUNKER_VERSION = 1  # bump when chunk_document gives other chunks for the same inputs (invalidates reuse)
# Fixed namespace: point ids must be identical on every machine and every run.
POINT_NAMESPACE = uuid.UUID("6f1c3c7e-2f0b-5b7e-9a59-6d3b0d1c2a10")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Chunk:
    point_id: str  # uuid5(doc_id + chunk_hash): the same text of the same document keeps its id
    doc_id: str
    source: str
    path: str
    position: int  # order of the chunk within its document
    heading_path: list[str]  # enclosing headings, outermost first
    text: str
    chunk_hash: str
    doc_hash: str
    n_tokens: int


def point_id(doc_id: str, chunk_hash: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}\n{chunk_hash}"))


def split_sections(text: str) -> list[tuple[list[str], str]]:
    """(heading path, section text incl. its heading line) in order; fenced code never counts as a heading.

    A heading with no body of its own is merged into the next section so no chunk is a bare title.
    """
    sections: list[tuple[list[str], list[str]]] = []
    path: list[tuple[int, str]] = []
    current: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            if any(ln.strip() and not _HEADING.match(ln) for ln in current):
                sections.append(([t for _, t in path], current))
                current = []
            level = len(m.group(1))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, m.group(2).strip())]
        current.append(line)
    if any(ln.strip() for ln in current):
        sections.append(([t for _, t in path], current))
    return [(heads, "\n".join(lines).strip()) for heads, lines in sections]


def make_splitter(tokenizer: Any, params: ChunkParams):
    """A markdown-aware splitter whose capacity is counted with the embedding model's own tokenizer."""
    return MarkdownSplitter.from_huggingface_tokenizer(
        tokenizer, capacity=params.size_tokens, overlap=params.overlap_tokens
    )


def chunk_document(doc: dict, splitter, tokenizer: Any) -> tuple[list[Chunk], int]:
    """Chunks of one document, and how many repeated identical chunks were skipped. Thread-safe: the splitter and
    the tokenizer are Rust objects that release the GIL."""
    pieces: list[tuple[list[str], str, str]] = []
    seen: set[str] = set()
    repeats = 0
    for heads, section in split_sections(doc["text"]):
        for piece in splitter.chunks(section):
            piece = piece.strip()
            if not piece:
                continue
            digest = hashlib.sha256(piece.encode("utf-8")).hexdigest()
            if digest in seen:  # the same paragraph twice in one document adds nothing to retrieval
                repeats += 1
                continue
            seen.add(digest)
            pieces.append((heads, piece, digest))
    encodings = tokenizer.encode_batch([piece for _, piece, _ in pieces], add_special_tokens=True)
    out = [
        Chunk(
            point_id(doc["doc_id"], digest),
            doc["doc_id"],
            doc["source"],
            doc["path"],
            position,
            heads,
            piece,
            digest,
            doc["content_hash"],
            len(enc.ids),
        )
        for position, ((heads, piece, digest), enc) in enumerate(zip(pieces, encodings))
    ]
    return out, repeats


def chunker_key(tokenizer: Any, params: ChunkParams) -> str:
    """Everything a document's chunks depend on besides the document: splitter settings and the tokenizer."""
    parts = [str(CHUNKER_VERSION), str(params.size_tokens), str(params.overlap_tokens), tokenizer.to_str()]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def doc_key(doc_id: str, content_hash: str, source: str, path: str) -> tuple[str, str, str, str]:
    return doc_id, content_hash, source, path


def key_of(doc: dict) -> tuple[str, str, str, str]:
    return doc_key(doc["doc_id"], doc["content_hash"], doc["source"], doc["path"])


def chunk_documents(
    docs: list[dict],
    tokenizer: Any,
    params: ChunkParams,
    max_tokens: int,
    on_progress: OnProgress = None,
    previous: dict[tuple, list[dict]] | None = None,
) -> tuple[list[Chunk], dict]:
    """Pure transform: cleaned documents -> chunks (+ stats). tokenizer is a `tokenizers.Tokenizer`.

    `previous` maps doc_key -> the chunk records an earlier run made with the same chunker_key; an unchanged
    document takes them as they are instead of being split again (the same function of the same inputs).
    """
    if params.size_tokens > max_tokens:
        raise ConfigError(
            f"chunk.size_tokens={params.size_tokens} exceeds the embedding model's max_seq_length={max_tokens}; "
            f"the model would silently truncate chunks. Set chunk.size_tokens <= {max_tokens}."
        )
    start = time.perf_counter()
    splitter = make_splitter(tokenizer, params)
    previous = previous or {}

    def split(doc: dict) -> tuple[list[Chunk], int] | None:  # None: the earlier chunks are reused
        return None if key_of(doc) in previous else chunk_document(doc, splitter, tokenizer)

    chunks: list[Chunk] = []
    repeats = reused = 0
    # The splitter releases the GIL: one thread per core splits documents (1.9x on 2 cores), results in order.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, (doc, result) in enumerate(zip(docs, pool.map(split, docs)), start=1):
            if result is None:
                chunks += [Chunk(**c) for c in previous[key_of(doc)]]
                reused += 1
            else:
                chunks += result[0]
                repeats += result[1]
            if on_progress:
                on_progress(i, len(docs))
    tokens = [c.n_tokens for c in chunks]
    stats = {
        "documents": len(docs),
        "documents_reused": reused,
        "chunks": len(chunks),
        "repeated_chunks_skipped": repeats,  # in the documents split by this run
        "tokens_mean": round(sum(tokens) / len(tokens), 1) if tokens else 0,
        "tokens_max": max(tokens, default=0),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return chunks, stats
