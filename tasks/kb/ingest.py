"""Ingest: walk the source folders, fetch the web sources, and snapshot every document's text with its provenance."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core.clock import utc_iso
from tasks.core.config import IngestParams, is_url, resolve_path
from tasks.core.errors import SourceError
from tasks.core.stage import OnProgress
from tasks.kb.fetch import HttpFetcher
from tasks.kb.readers import FORMATS, read_file
from tasks.kb.web import Page, Visit, crawl_sources, load_state, normalize_url, page_mtime, read_url_list, save_state


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
    url: str = ""  # web pages: the URL as requested (path holds it after redirects)
    fetched_at: str = ""  # web pages: when this text was fetched (a kept page's is older than this run)
    http_status: int = 0  # web pages: this run's answer (200, 304, or the failure that kept the last version)


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
    """(source as configured, source root, file) for every file with a known extension in the source folders."""
    exts = {e.lower() for e in params.extensions}
    unknown = exts - set(FORMATS)
    if unknown:
        raise SourceError(f"ingest.extensions: no reader for {sorted(unknown)}; supported: {sorted(FORMATS)}.")
    check_sources(root_dir, params)
    files = []
    for source in params.sources:
        root = resolve_path(root_dir, source)
        if not is_url(source) and root.is_dir():
            files += [(source, root, f) for f in _walk(root) if f.suffix.lower() in exts]
    return files


def web_seeds(root_dir: Path, params: IngestParams) -> list[tuple[str, str]]:
    """(url, source as configured) for each URL source and each line of each URL-list file."""
    seeds = []
    for source in params.sources:
        if is_url(source):
            seeds.append((source, source))
        elif (path := resolve_path(root_dir, source)).is_file():
            seeds += [(url, source) for url in read_url_list(path, source)]
    return seeds


def check_sources(root_dir: Path, params: IngestParams) -> None:
    """Every source is a URL, an existing folder or a well-formed URL-list file (the CLI asks before a run starts)."""
    for source in params.sources:
        root = resolve_path(root_dir, source)
        if is_url(source) or root.is_dir():
            continue
        if not root.exists():
            raise SourceError(
                f"source folder '{source}' does not exist ({root}). Fix ingest.sources in params.yaml "
                "or the --source option; nothing was read or written."
            )
        read_url_list(root, source)


def ingest_sources(
    root_dir: Path, params: IngestParams, on_progress: OnProgress = None, web_state: Path | None = None
) -> tuple[list[RawDocument], dict]:
    """All documents from all sources (files in a stable order, then web pages), plus stage stats.

    web_state is where each page's validators and last good text are kept between runs (data/cache/web.json)."""
    start = time.perf_counter()
    files = list_files(root_dir, params)
    seeds = web_seeds(root_dir, params)
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
            on_progress(i, len(files) + len(seeds))
    stats: dict[str, Any] = {}
    if seeds:
        progress = (lambda done, known: on_progress(len(files) + done, len(files) + known)) if on_progress else None
        web_docs, stats["web"], stats["web_problems"] = ingest_web(seeds, params, web_state, progress)
        for doc in web_docs:
            if doc.doc_id in seen:  # a second URL whose canonical URL names a page already read: not read twice
                stats["web_problems"].append(
                    {
                        "url": doc.url,
                        "outcome": "duplicate",
                        "reason": f"same page as {seen[doc.doc_id]} (canonical URL)",
                    }
                )
                continue
            seen[doc.doc_id] = doc.url
            docs.append(doc)
    by_status: dict[str, int] = {}
    for d in docs:
        by_status[d.status] = by_status.get(d.status, 0) + 1
    return docs, {
        "files": len(files),
        "documents": len(docs),
        "by_status": by_status,
        "bytes": sum(d.size for d in docs if d.status != "skipped"),
        **stats,
        "seconds": round(time.perf_counter() - start, 3),
    }


def ingest_web(
    seeds: list[tuple[str, str]], params: IngestParams, state_path: Path | None, on_visit=None
) -> tuple[list[RawDocument], dict, list[dict]]:
    """Fetch the web sources against the last run's state, save the new state, and turn visits into documents."""
    state = load_state(state_path) if state_path else {}
    max_bytes = int(params.max_file_mb * 1024 * 1024)
    fetcher = HttpFetcher(params.web, max_bytes)
    try:
        visits, truncated = crawl_sources(fetcher, seeds, state, params.web, max_bytes, on_visit)
    finally:
        fetcher.close()
    if state_path:
        save_state(state_path, {v.url: v.page for v in visits if v.page is not None})
    outcomes: dict[str, int] = {}
    sitemaps = [v for v in visits if v.page is not None and v.page.format == "sitemap"]
    for v in visits:
        if v.page is None or v.page.format != "sitemap":
            outcomes[v.outcome] = outcomes.get(v.outcome, 0) + 1
    stats = {
        "urls": len(visits),
        "sitemaps": len(sitemaps),
        "requests": fetcher.requests,
        "not_modified": sum(v.http_status == 304 for v in visits),
        "outcomes": outcomes,
        "truncated_at_max_pages": sorted(truncated),
    }
    problems = [
        {"url": v.url, "outcome": v.outcome, "reason": v.reason}
        for v in visits
        if v.outcome in ("gone", "kept", "failed")
    ]
    docs = [web_document(v) for v in visits if v.outcome not in ("gone", "failed")]
    return [d for d in docs if d.format != "sitemap"], stats, problems


def web_document(v: Visit) -> RawDocument:
    """A visit as a document: the page it serves, or (skipped, undecodable) the reason it has none."""
    p: Page | None = v.page
    if p is None:
        return RawDocument(
            normalize_url(v.url), v.source, v.url, "html", "", 0, 0.0, v.outcome, v.reason, "", None,
            url=v.url, fetched_at=utc_iso(), http_status=v.http_status,
        )  # fmt: skip
    return RawDocument(
        p.doc_id, v.source, p.final_url, p.format, p.sha256, p.size, page_mtime(p), "ok", v.reason, "utf-8", p.text,
        url=v.url, fetched_at=p.fetched_at, http_status=v.http_status,
    )  # fmt: skip


def to_record(doc: RawDocument) -> dict:
    return asdict(doc)
