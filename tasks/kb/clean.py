"""Clean: repair unicode, extract HTML main content, normalize whitespace, drop empty and duplicate documents."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass

from tasks.core.config import CleanParams
from tasks.kb.dedup import NearDuplicates

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class CleanDocument:
    doc_id: str
    source: str
    path: str
    format: str
    text: str
    content_hash: str  # sha256 of the normalized text: the document's identity for change detection


@dataclass(frozen=True)
class Drop:
    doc_id: str
    path: str
    status: str  # "empty" | "duplicate" | "undecodable" | "skipped"
    reason: str


def html_to_text(html: str) -> str:
    """Main content of a page as markdown (headings kept for chunking); nav, footers, scripts are dropped."""
    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.ERROR)  # "discarding data" is expected for script-only pages

    text = trafilatura.extract(
        html,
        output_format="markdown",
        include_comments=False,
        include_tables=True,
        include_links=False,
        include_images=False,
        favor_recall=True,
    )
    return text or ""


def normalize_text(text: str, form: str = "NFC") -> str:
    """Fix mojibake, normalize unicode, collapse runs of spaces and blank lines, keep line structure."""
    import ftfy

    text = ftfy.fix_text(text, normalization=form).replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).rstrip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clean_documents(raw: list[dict], params: CleanParams) -> tuple[list[CleanDocument], list[Drop], dict]:
    """Pure transform over ingest records: kept documents, drops with reasons, stats."""
    start = time.perf_counter()
    kept: list[CleanDocument] = []
    drops: list[Drop] = []
    first_by_hash: dict[str, str] = {}
    near, near_dups = None, 0
    if params.near_duplicate_threshold is not None:
        near = NearDuplicates(params.near_duplicate_threshold, params.minhash_permutations, params.shingle_words)
    for rec in sorted(raw, key=lambda r: r["doc_id"]):
        if rec["status"] != "ok":
            drops.append(Drop(rec["doc_id"], rec["path"], rec["status"], rec["reason"]))
            continue
        text = rec["text"] or ""
        if rec["format"] == "html":
            text = html_to_text(text)
        text = normalize_text(text, params.unicode_form)
        if len(text) < max(params.min_chars, 1):
            why = "no text after cleaning" if not text else f"{len(text)} chars < clean.min_chars={params.min_chars}"
            drops.append(Drop(rec["doc_id"], rec["path"], "empty", why))
            continue
        digest = content_hash(text)
        if digest in first_by_hash:
            drops.append(Drop(rec["doc_id"], rec["path"], "duplicate", f"same content as {first_by_hash[digest]}"))
            continue
        first_by_hash[digest] = rec["doc_id"]
        similar = near.check(rec["doc_id"], text) if near else None
        if similar:
            why = (
                f"near-duplicate of {similar[0]} (estimated Jaccard {similar[1]:.2f} >= "
                f"clean.near_duplicate_threshold={params.near_duplicate_threshold})"
            )
            drops.append(Drop(rec["doc_id"], rec["path"], "duplicate", why))
            near_dups += 1
            continue
        kept.append(CleanDocument(rec["doc_id"], rec["source"], rec["path"], rec["format"], text, digest))
    dropped: dict[str, int] = {}
    for d in drops:
        dropped[d.status] = dropped.get(d.status, 0) + 1
    stats = {
        "input": len(raw),
        "kept": len(kept),
        "dropped": dropped,
        "near_duplicates": near_dups,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return kept, drops, stats
