"""The web section: what fetching a site costs ragtune's ingest on the first run, when nothing changed, and after a
1% edit, next to a loader that keeps no state (every page fetched and extracted on every run).

The site is N generated documents (benchmarks/corpus.py) rendered as HTML pages with navigation and a footer, and a
sitemap.xml listing them, served by Python's http.server (SimpleHTTPRequestHandler, which answers If-Modified-Since
with 304 from the file's mtime, as a static web server does) in this process, on 127.0.0.1.
  ragtune   ingest_sources on the sitemap URL, the state file kept between runs; politeness raised for a local
            server (ingest.web.per_host_rps=10000, per_host_connections=8, max_connections=8)
  bare      httpx.Client (8 threads) GET of every page + trafilatura.extract with ragtune's settings: what a loader
            without conditional GETs does on every run, whatever changed
"""

from __future__ import annotations

import functools
import html
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks import corpus

WEB = {"per_host_rps": 10_000, "per_host_connections": 8, "max_connections": 8, "retries": 0, "max_pages": 100_000}
EDIT_SHARE = 0.01


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connections 6-8 of a burst, and a SYN retry costs 1 s


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def build_site(folder: Path, n_docs: int, seed: int) -> list[str]:
    """HTML pages from the generated markdown, plus sitemap.xml; returns the page paths."""
    src = folder.parent / "markdown"
    corpus.generate(src, n_docs, seed)
    paths = []
    for md in sorted(src.rglob("*.md")):
        rel = md.relative_to(src).with_suffix(".html").as_posix()
        body = "".join(f"<p>{html.escape(p)}</p>" for p in md.read_text(encoding="utf-8").split("\n\n"))
        page = (
            f"<html><head><title>{rel}</title></head><body><nav><a href='/'>Home</a> <a href='/support'>Support</a>"
            f"</nav><article>{body}</article><footer>Copyright Larkspur Devices. All rights reserved.</footer>"
            "</body></html>"
        )
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(page, encoding="utf-8")
        paths.append("/" + rel)
    return paths


def edit_pages(folder: Path, paths: list[str], share: float) -> int:
    """Append a sentence to share of the pages and move their mtime on (Last-Modified has 1 s resolution)."""
    step = max(1, int(1 / share))
    edited = paths[::step]
    later = time.time() + 10
    for p in edited:
        f = folder / p.lstrip("/")
        f.write_text(f.read_text(encoding="utf-8").replace("</article>", "<p>Edited for the next run.</p></article>"))
        os.utime(f, (later, later))
    return len(edited)


def bare_fetch(urls: list[str]) -> int:
    """Every page fetched and extracted, no state: returns how many pages gave text."""
    import httpx

    from tasks.kb.clean import html_to_text

    with httpx.Client(timeout=20) as client, ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda u: html_to_text(client.get(u).text), urls))
    return sum(1 for t in texts if t)


def web_section(work: Path, n_docs: int, seed: int, log) -> dict:
    from tasks.core.config import IngestParams
    from tasks.kb.ingest import ingest_sources

    site = work / "site"
    paths = build_site(site, n_docs, seed)
    server = _Server(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    locs = "".join(f"<url><loc>{base}{p}</loc></url>" for p in paths)
    (site / "sitemap.xml").write_text(f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>')
    params = IngestParams(sources=[f"{base}/sitemap.xml"], web=WEB)
    state = work / "web.json"
    log(f"web: {len(paths)} pages at {base}")

    def run() -> dict:
        t = time.perf_counter()
        docs, stats = ingest_sources(work, params, web_state=state)
        w = stats["web"]
        return {
            "seconds": round(time.perf_counter() - t, 2),
            "documents": sum(d.status == "ok" for d in docs),
            "requests": w["requests"],
            "not_modified": w["not_modified"],
            "outcomes": w["outcomes"],
        }

    try:
        first = run()
        unchanged = run()
        edited = edit_pages(site, paths, EDIT_SHARE)
        after_edit = run()
        t = time.perf_counter()
        bare_pages = bare_fetch([base + p for p in paths])
        bare_s = time.perf_counter() - t
    finally:
        server.shutdown()
        server.server_close()
    return {
        "pages": len(paths),
        "ragtune": {"first": first, "unchanged": unchanged, "after_edit": {**after_edit, "edited_pages": edited}},
        "bare": {"seconds": round(bare_s, 2), "documents": bare_pages, "requests": len(paths)},
        "unchanged_speedup": round(bare_s / unchanged["seconds"], 1),
        "note": "local http.server in this process; ragtune with politeness raised for it (ingest.web: "
        f"{WEB}); bare = httpx GET + trafilatura of every page, 8 threads, no state",
    }
