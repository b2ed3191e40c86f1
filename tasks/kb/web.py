"""Web sources: pages, sitemaps and URL lists, fetched incrementally, one RawDocument per page.

Each page's validators (ETag, Last-Modified) and last good text are kept in data/cache/web.json, so:
- an unchanged page costs one conditional GET answered 304 and reuses its stored text: no parsing, and (its
  content hash unchanged) no embedding;
- a page answering 404 or 410 is gone: it yields no document, so the index deletes it (under the guard);
- a timeout, 5xx, DNS or TLS failure, or an unreadable robots.txt, keeps the page's last good text, and the
  ingest stats name the page and the error. A page that never loaded yields nothing and is reported.
doc_id is the page's canonical URL (<link rel=canonical> on the same host, else the URL after redirects).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

from lxml import etree, html

from tasks.core.clock import utc_iso
from tasks.core.config import WebParams, is_url
from tasks.core.errors import SourceError
from tasks.core.workspace import write_json
from tasks.kb.clean import html_to_text
from tasks.kb.fetch import Fetcher, Response
from tasks.kb.readers import decode_text, read_pdf

log = logging.getLogger("ragtune")

HTML_TYPES = {"text/html", "application/xhtml+xml"}
TEXT_TYPES = {"text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown"}
XML_TYPES = {"application/xml", "text/xml", "application/x-gzip", "application/gzip"}
DEFAULT_PORTS = {"http": 80, "https": 443}
SITEMAP_SUFFIXES = (".xml", ".xml.gz")
SITEMAP_MAX_BYTES = 50 * 1024 * 1024  # the sitemap protocol's limit; pages keep ingest.max_file_mb
STATE_VERSION = 1


@dataclass(frozen=True)
class Page:
    """A URL's last good fetch, as web.json keeps it: what a 304 or a failed fetch reuses."""

    url: str  # as requested
    doc_id: str  # canonical URL
    final_url: str  # after redirects
    etag: str
    last_modified: str
    fetched_at: str
    format: str  # "markdown" | "text" (the text below is already extracted) | "sitemap"
    text: str
    sha256: str  # of the body bytes
    size: int
    links: list[str] = field(default_factory=list)  # <a href>s in scope-free form; a sitemap's <loc>s


@dataclass(frozen=True)
class Visit:
    """What one URL came to this run."""

    url: str
    source: str
    depth: int
    outcome: str  # fetched | unchanged | gone | kept | failed | skipped | undecodable
    http_status: int
    reason: str = ""
    page: Page | None = None  # the page this run serves (fresh, or the last good one)


def normalize_url(url: str) -> str:
    """Scheme and host lower-cased, default port, fragment and credentials dropped, an empty path made '/'."""
    parts = urlsplit(url.strip())
    scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def in_scope(url: str, seed: str, scope: str) -> bool:
    """Crawl scope: the seed's host, and for 'prefix' also its folder (https://h/docs/a.html -> https://h/docs/)."""
    u, s = urlsplit(url), urlsplit(seed)
    if (u.scheme, u.netloc) != (s.scheme, s.netloc):
        return False
    return scope == "host" or u.path.startswith(s.path[: s.path.rfind("/") + 1])


def parse_sitemap(body: bytes, max_bytes: int) -> list[str] | None:
    """The <loc>s of a sitemap or sitemap index (gzip allowed); None when the body is not one."""
    if body[:2] == b"\x1f\x8b":
        try:
            body = gzip.GzipFile(fileobj=io.BytesIO(body)).read(max_bytes + 1)[:max_bytes]
        except (OSError, EOFError, zlib.error):
            return None
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError:
        return None
    if etree.QName(root).localname not in ("urlset", "sitemapindex"):
        return None
    return [el.text.strip() for el in root.iter("{*}loc") if el.text and el.text.strip()]


def absolute_url(base: str, href: str) -> str | None:
    """href resolved against base and normalized, or None when it is not a well-formed http(s) URL."""
    try:
        url = urljoin(base, href.strip())
        return normalize_url(url) if is_url(url) else None
    except ValueError:  # a bad port or bracket: one broken link on a page is skipped, not fatal
        return None


def page_links(body: bytes, final_url: str) -> tuple[str | None, list[str]]:
    """(canonical URL if the page names one on its own host, absolute http(s) links) of an HTML page."""
    try:
        doc = html.document_fromstring(body)  # bytes: lxml honours an XML prolog's or a <meta> charset
    except (etree.ParserError, ValueError):
        return None, []
    canonical = None
    host = urlsplit(normalize_url(final_url)).netloc
    for href in doc.xpath("//link[contains(concat(' ', normalize-space(@rel), ' '), ' canonical ')]/@href"):
        url = absolute_url(final_url, href)
        if url and urlsplit(url).netloc == host:
            canonical = url
            break
    links = [url for href in doc.xpath("//a/@href") if (url := absolute_url(final_url, href))]
    return canonical, list(dict.fromkeys(links))


def decode_page(body: bytes, content_type: str) -> tuple[str | None, str]:
    """(text, reason): the charset the server names first, then UTF-8 and detection."""
    charset = content_type.partition("charset=")[2].split(";")[0].strip().strip('"')
    if charset:
        try:
            return body.decode(charset), ""
        except (LookupError, UnicodeDecodeError):
            pass
    text, _, reason = decode_text(body)
    return text, reason


def read_body(r: Response, max_bytes: int) -> tuple[str, str, str | None, list[str], str]:
    """(format, text, canonical, links, reason) of a 200 response; text '' with a reason when it has none."""
    ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
    path = urlsplit(r.url).path.lower()
    if ctype in XML_TYPES or path.endswith(SITEMAP_SUFFIXES):
        locs = parse_sitemap(r.body, max(max_bytes, SITEMAP_MAX_BYTES))
        if locs is not None:
            return "sitemap", "", None, [url for u in locs if (url := absolute_url(r.url, u))], ""
    if ctype == "application/pdf":
        text, reason = read_pdf(r.body)
        return "text", text or "", None, [], reason
    if ctype not in HTML_TYPES and ctype not in TEXT_TYPES and ctype:
        return "", "", None, [], f"content-type {ctype} is not a page ragtune reads (HTML, text, markdown, PDF)"
    decoded, reason = decode_page(r.body, r.headers.get("content-type", ""))
    if decoded is None:
        return "", "", None, [], reason
    if ctype in TEXT_TYPES:
        return TEXT_TYPES[ctype], decoded, None, [], ""
    canonical, links = page_links(r.body, r.url)
    return "markdown", html_to_text(decoded), canonical, links, ""


def visit_url(fetcher: Fetcher, url: str, source: str, depth: int, last: Page | None, max_bytes: int) -> Visit:
    """Fetch one URL (conditionally when we hold its last good version) and decide what it comes to."""
    allowed, why = fetcher.allowed(url)
    if allowed is False:
        return Visit(url, source, depth, "skipped", 0, "robots.txt disallows it")
    sitemap = (last is not None and last.format == "sitemap") or urlsplit(url).path.lower().endswith(SITEMAP_SUFFIXES)
    if allowed is None:
        r = Response(url, 0, error=why)
    else:
        cap = max(max_bytes, SITEMAP_MAX_BYTES) if sitemap else max_bytes
        r = fetcher.get(url, last.etag if last else "", last.last_modified if last else "", cap)
    if r.disallowed:
        return Visit(url, source, depth, "skipped", 0, r.error)
    if r.status == 304 and last:
        return Visit(url, source, depth, "unchanged", 304, page=last)
    if r.status in (404, 410):
        return Visit(url, source, depth, "gone", r.status, f"HTTP {r.status}")
    if r.status != 200:
        return _keep(url, source, depth, r.status, f"HTTP {r.status}" if r.status else r.error, last)
    if r.too_large:
        if last is not None and last.format == "sitemap":  # a sitemap's pages stay until one parses again
            return _keep(url, source, depth, 200, f"too large: {r.error}", last)
        return Visit(url, source, depth, "undecodable", 200, f"too large: {r.error} > ingest.max_file_mb")
    fmt, text, canonical, links, reason = read_body(r, max_bytes)
    if last is not None and last.format == "sitemap" and fmt != "sitemap":
        return _keep(url, source, depth, 200, f"no longer parses as a sitemap ({reason or fmt})", last)
    if not fmt or (fmt != "sitemap" and not text):
        return Visit(url, source, depth, "skipped" if not fmt else "undecodable", 200, reason or "no text")
    sha = hashlib.sha256(r.body).hexdigest()
    page = Page(
        url,
        doc_id=canonical or normalize_url(r.url),
        final_url=r.url,
        etag=r.headers.get("etag", ""),
        last_modified=r.headers.get("last-modified", ""),
        fetched_at=utc_iso(),
        format=fmt,
        text=text,
        sha256=sha,
        size=len(r.body),
        links=links,
    )
    same = last is not None and last.sha256 == sha
    return Visit(url, source, depth, "unchanged" if same else "fetched", 200, page=page)


def _keep(url: str, source: str, depth: int, status: int, error: str, last: Page | None) -> Visit:
    """A failure never deletes: the last good version serves on ("kept"); with none, nothing does ("failed")."""
    if last:
        return Visit(url, source, depth, "kept", status, f"{error}; kept the version of {last.fetched_at}", last)
    return Visit(url, source, depth, "failed", status, error)


def read_url_list(path: Path, source: str) -> list[str]:
    """A text file of URLs, one per line; blank lines and # comments are skipped; anything else fails by line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{source}: not UTF-8 text (byte {exc.start}). A URL-list source is a UTF-8 text file with one URL per "
            "line; save it as UTF-8. Nothing was fetched."
        ) from None
    urls = []
    for lineno, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if not line:
            continue
        url = absolute_url(line, line) if is_url(line) else None
        if url is None or not urlsplit(url).hostname:
            raise SourceError(
                f"{source}, line {lineno}: '{line[:80]}' is not an http(s) URL. A URL-list source holds one URL "
                "per line (# starts a comment); fix the line. Nothing was fetched."
            )
        urls.append(url)
    return urls


def load_state(path: Path) -> dict[str, Page]:
    """web.json's pages by requested URL (none before the first run). A damaged file stops the run: without it,
    a page that fails this time would have no last version to keep, and would leave the index."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["version"] != STATE_VERSION:
            raise ValueError(f"version {data['version']}, this ragtune reads {STATE_VERSION}")
        return {url: Page(**p) for url, p in data["pages"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SourceError(
            f"{path}: the web sources' state is unreadable ({type(exc).__name__}: {exc}). Delete it: the next "
            "refresh fetches every page whole (pages that fail then have no last version to keep)."
        ) from None


def save_state(path: Path, pages: dict[str, Page]) -> None:
    write_json(path, {"version": STATE_VERSION, "pages": {u: asdict(p) for u, p in sorted(pages.items())}})


@dataclass
class Crawl:
    """The URLs still to visit, per source: seeds and sitemap entries at depth 0, crawled links deeper."""

    params: WebParams
    queue: list[tuple[str, str, int, str]] = field(default_factory=list)  # (url, source, depth, seed)
    seen: set[str] = field(default_factory=set)
    per_source: dict[str, int] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)

    def add(self, url: str, source: str, depth: int, seed: str) -> None:
        url = normalize_url(url)
        if url in self.seen:
            return
        if self.per_source.get(source, 0) >= self.params.max_pages:
            self.truncated.add(source)
            return
        self.seen.add(url)
        self.per_source[source] = self.per_source.get(source, 0) + 1
        self.queue.append((url, source, depth, seed))

    def follow(self, v: Visit, seed: str) -> None:
        """Queue what a visited page leads to: a sitemap's entries always, a page's links only when crawling."""
        if v.page is None:
            return
        if v.page.format == "sitemap":
            for url in v.page.links:
                self.add(url, v.source, v.depth, url)
        elif self.params.crawl and v.depth < self.params.crawl_depth:
            for url in v.page.links:
                if in_scope(url, seed, self.params.crawl_scope):
                    self.add(url, v.source, v.depth + 1, seed)

    def waves(self) -> Iterator[list[tuple[str, str, int, str]]]:
        while self.queue:
            wave, self.queue = self.queue, []
            yield wave


def crawl_sources(
    fetcher: Fetcher,
    seeds: list[tuple[str, str]],
    state: dict[str, Page],
    params: WebParams,
    max_bytes: int,
    on_visit: Callable[[int, int], None] | None = None,
) -> tuple[list[Visit], set[str]]:
    """Visit every seed (url, source), then what sitemaps and (with web.crawl) pages lead to, wave by wave.

    Returns the visits in a stable order and the sources cut off at web.max_pages."""
    crawl = Crawl(params)
    for url, source in seeds:
        crawl.add(url, source, 0, normalize_url(url))
    visits: list[Visit] = []
    with ThreadPoolExecutor(max_workers=params.max_connections) as pool:
        for wave in crawl.waves():
            done = pool.map(lambda q: visit_url(fetcher, q[0], q[1], q[2], state.get(q[0]), max_bytes), wave)
            for (_, _, _, seed), v in zip(wave, done, strict=True):
                visits.append(v)
                crawl.follow(v, seed)
                if on_visit:
                    on_visit(len(visits), len(visits) + len(crawl.queue))
    return visits, crawl.truncated


def page_mtime(page: Page) -> float:
    """Last-Modified as epoch seconds when the server sent one, else the fetch time."""
    try:
        return parsedate_to_datetime(page.last_modified).timestamp()
    except (TypeError, ValueError):
        return datetime.fromisoformat(page.fetched_at).timestamp()
