"""Ingest: walk the source folders and snapshot every document's text with its provenance."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import IngestParams, resolve_path
from tasks.core.errors import SourceError
from tasks.core.stage import OnProgress
from tasks.kb.readers import FORMATS, read_file


@dataclass(frozen=True)
class RawDocument:
    doc_id: str  # path relative to its source root (+ "#record" for JSONL lines): stable across runs
    source: str  # the source root as configured
    path: str  # file path relative to the source root
    format: str
    sha256: str  # of the file bytes
    size: int
    mtime: float
    status: str  # "ok" | "undecodable" | "skipped"
    reason: str
    encoding: str
    text: str | None


def _walk(root: Path) -> Iterator[Path]:
    """Files under root, sorted, never following links out of it (a link may point anywhere)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def ingest_file(path: Path, root: Path, source: str, params: IngestParams) -> list[RawDocument]:
    """Read one file into one RawDocument (or one per JSONL record); problems are recorded as status/reason."""
    rel = path.relative_to(root).as_posix()
    fmt = FORMATS[path.suffix.lower()]
    stat = path.lstat()
    base: dict[str, Any] = dict(source=source, path=rel, format=fmt, size=stat.st_size, mtime=stat.st_mtime)
    if path.is_symlink() and not _inside(path, root):
        return [
            RawDocument(
                rel,
                sha256="",
                status="skipped",
                encoding="",
                text=None,
                reason="symlink pointing outside the source root (not followed)",
                **base,
            )
        ]
    size = path.stat().st_size
    if size > params.max_file_mb * 1024 * 1024:
        return [
            RawDocument(
                rel,
                sha256="",
                status="undecodable",
                encoding="",
                text=None,
                reason=f"too large: {size / 2**20:.1f} MB > ingest.max_file_mb={params.max_file_mb}",
                **{**base, "size": size},
            )
        ]
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    docs = []
    for d in read_file(data, fmt, params.jsonl_text_field, params.jsonl_id_field):
        doc_id = rel if d.key is None else f"{rel}#{d.key}"
        docs.append(
            RawDocument(
                doc_id,
                sha256=digest,
                status=d.status,
                reason=d.reason,
                encoding=d.encoding,
                text=d.text,
                **{**base, "size": size},
            )
        )
    return docs


def list_files(root_dir: Path, params: IngestParams) -> list[tuple[str, Path, Path]]:
    """(source as configured, source root, file) for every file with a known extension; missing roots fail."""
    exts = {e.lower() for e in params.extensions}
    unknown = exts - set(FORMATS)
    if unknown:
        raise SourceError(f"ingest.extensions: no reader for {sorted(unknown)}; supported: {sorted(FORMATS)}.")
    check_sources(root_dir, params)
    files = []
    for source in params.sources:
        root = resolve_path(root_dir, source)
        files += [(source, root, f) for f in _walk(root) if f.suffix.lower() in exts]
    return files


def check_sources(root_dir: Path, params: IngestParams) -> None:
    """Every source folder exists (the CLI asks before it starts a run; ingest asks again)."""
    for source in params.sources:
        root = resolve_path(root_dir, source)
        if not root.is_dir():
            raise SourceError(
                f"source folder '{source}' does not exist ({root}). Fix ingest.sources in params.yaml "
                "or the --source option; nothing was read or written."
            )


def ingest_sources(
    root_dir: Path, params: IngestParams, on_progress: OnProgress = None
) -> tuple[list[RawDocument], dict]:
    """All documents from all sources, in a stable order, plus stage stats."""
    start = time.perf_counter()
    files = list_files(root_dir, params)
    docs: list[RawDocument] = []
    seen: dict[str, str] = {}
    for i, (source, root, path) in enumerate(files, start=1):
        for doc in ingest_file(path, root, source, params):
            if doc.doc_id in seen:
                raise SourceError(
                    f"doc_id '{doc.doc_id}' exists under both '{seen[doc.doc_id]}' and '{source}'. doc_ids are "
                    "paths relative to their source folder: rename one file or merge the folders."
                )
            seen[doc.doc_id] = source
            docs.append(doc)
        if on_progress:
            on_progress(i, len(files))
    by_status: dict[str, int] = {}
    for d in docs:
        by_status[d.status] = by_status.get(d.status, 0) + 1
    stats = {
        "files": len(files),
        "documents": len(docs),
        "by_status": by_status,
        "bytes": sum(d.size for d in docs if d.status != "skipped"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return docs, stats


def to_record(doc: RawDocument) -> dict:
    return asdict(doc)
