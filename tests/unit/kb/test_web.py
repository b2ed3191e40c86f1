"""Web sources against a real local http.server (tasks/kb/web.py, tasks/kb/fetch.py): conditional GETs, gone pages,
failures that keep the last good version, robots.txt, redirects, content types, size and time limits, crawling."""

from __future__ import annotations

import gzip
import json

import pytest

from tasks.core.config import IngestParams
from tasks.core.errors import SourceError
from tasks.kb.ingest import ingest_sources
from tasks.kb.web import in_scope, normalize_url, parse_sitemap
from tests.website import Route, Site, page

FAST = {"timeout_s": 0.5, "retries": 1, "backoff_s": 0.05, "per_host_rps": 200, "per_host_connections": 4}
LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def ingest(tmp_path, sources, **web):
    params = IngestParams(sources=sources, max_file_mb=0.01, web={**FAST, **web})
    docs, stats = ingest_sources(tmp_path, params, web_state=tmp_path / "web.json")
    return {d.doc_id: d for d in docs}, stats


def sitemap(site: Site, paths: list[str]) -> str:
    locs = "".join(f"<url><loc>{site.url(p)}</loc></url>" for p in paths)
    return f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'


PATHS = ["/unchanged.html", "/edited.html", "/removed.html", "/flaky.html", "/private/secret.html", "/old.html",
         "/image.png", "/huge.html", "/slow.html", "/down.html", "/notes.txt"]  # fmt: skip


def test_a_site_fetched_twice_through_its_sitemap(tmp_path, site):
    r = site.routes
    r["/robots.txt"] = Route("User-agent: *\nDisallow: /private/\n", ctype="text/plain")
    r["/sitemap.xml"] = Route(sitemap(site, PATHS), ctype="application/xml")
    r["/unchanged.html"] = Route(page("Heat pumps", "Dual-fuel heat pumps switch to gas below -5 C."), etag='"u1"')
    r["/edited.html"] = Route(page("Allowance", "The on-call allowance is 150 EUR per week."), etag='"e1"')
    r["/removed.html"] = Route(page("Retired", "The Falcon thermostat is retired."))
    r["/flaky.html"] = Route(page("Flaky", "This page answers 503 once, then 200."), fail_first=1)
    r["/private/secret.html"] = Route(page("Secret", "robots.txt keeps this page out."))
    r["/old.html"] = Route(location="/new.html")
    r["/new.html"] = Route(page("Moved", "This page moved here with a permanent redirect."))
    r["/image.png"] = Route(b"\x89PNG\r\n\x1a\n" + b"0" * 100, ctype="image/png")
    r["/huge.html"] = Route(page("Huge", "word " * 5000))  # 25 KB > the 10 KB cap
    r["/slow.html"] = Route(page("Slow", "Answers after the timeout."), delay_s=1.5)
    r["/down.html"] = Route(page("Down", "The Heron thermostat pairs over Wi-Fi."), last_modified=LAST_MODIFIED)
    r["/notes.txt"] = Route("Plain text notes about the Heron thermostat.", ctype="text/plain; charset=utf-8")

    docs, stats = ingest(tmp_path, [site.url("/sitemap.xml")])
    ok = {d: doc for d, doc in docs.items() if doc.status == "ok"}
    assert set(ok) == {site.url(p) for p in
                       ["/unchanged.html", "/edited.html", "/removed.html", "/flaky.html", "/new.html", "/down.html",
                        "/notes.txt"]}  # fmt: skip
    assert "150 EUR" in ok[site.url("/edited.html")].text and "Copyright" not in ok[site.url("/edited.html")].text
    moved = ok[site.url("/new.html")]
    assert moved.url == site.url("/old.html") and moved.path == site.url("/new.html")  # doc_id: the URL it landed on
    assert moved.http_status == 200 and moved.fetched_at and moved.source == site.url("/sitemap.xml")
    assert ok[site.url("/notes.txt")].format == "text"
    assert len(site.requests_to("/flaky.html")) == 2  # a 503, then a retry that got the page
    assert docs[site.url("/private/secret.html")].status == "skipped"
    assert "robots.txt" in docs[site.url("/private/secret.html")].reason
    assert not site.requests_to("/private/secret.html")  # never requested
    assert docs[site.url("/image.png")].status == "skipped" and "image/png" in docs[site.url("/image.png")].reason
    huge = docs[site.url("/huge.html")]
    assert huge.status == "undecodable" and "ingest.max_file_mb" in huge.reason
    assert site.url("/slow.html") not in docs  # never loaded: nothing to serve, reported
    assert {p["url"]: p["outcome"] for p in stats["web_problems"]} == {site.url("/slow.html"): "failed"}
    assert "timed out" in stats["web_problems"][0]["reason"]
    assert all(h.headers["user-agent"].startswith("ragtune/") for h in site.hits)

    # Second run: one page edited, one removed, one down; the rest unchanged.
    r["/edited.html"] = Route(page("Allowance", "The on-call allowance is 175 EUR per week."), etag='"e2"')
    del r["/removed.html"]
    r["/down.html"].status = 503
    before = len(site.hits)
    docs, stats = ingest(tmp_path, [site.url("/sitemap.xml")])
    second = {h.path: h for h in site.hits[before:]}
    assert second["/unchanged.html"].status == 304 and second["/unchanged.html"].headers["if-none-match"] == '"u1"'
    assert docs[site.url("/unchanged.html")].http_status == 304
    assert "-5 C" in docs[site.url("/unchanged.html")].text  # the stored text, not re-parsed
    assert "175 EUR" in docs[site.url("/edited.html")].text
    assert site.url("/removed.html") not in docs  # gone: the index will delete it
    kept = docs[site.url("/down.html")]
    assert kept.status == "ok" and "Wi-Fi" in kept.text and kept.http_status == 503
    assert "kept the version of" in kept.reason
    assert second["/down.html"].headers["if-modified-since"] == LAST_MODIFIED
    assert {p["url"]: p["outcome"] for p in stats["web_problems"]} == {
        site.url("/removed.html"): "gone",
        site.url("/down.html"): "kept",
        site.url("/slow.html"): "failed",
    }
    assert stats["web"]["not_modified"] == 1 and stats["web"]["outcomes"]["fetched"] == 1
    state = json.loads((tmp_path / "web.json").read_text())["pages"]
    assert site.url("/removed.html") not in state and site.url("/down.html") in state


def test_crawl_follows_links_in_scope_to_its_depth_and_page_cap(tmp_path, site):
    r = site.routes
    r["/docs/index.html"] = Route(page("Index", "Start here for the docs.", ("a.html", "b.html", "/blog/c.html",
                                                                             "http://example.invalid/x")))  # fmt: skip
    r["/docs/a.html"] = Route(page("A", "Page A of the docs.", ("deep.html", "index.html")))
    r["/docs/b.html"] = Route(page("B", "Page B of the docs."))
    r["/docs/deep.html"] = Route(page("Deep", "Two links away from the seed."))
    r["/blog/c.html"] = Route(page("C", "Outside the docs prefix."))

    docs, _ = ingest(tmp_path, [site.url("/docs/index.html")])
    assert set(docs) == {site.url("/docs/index.html")}  # crawling is off unless asked

    docs, _ = ingest(tmp_path, [site.url("/docs/index.html")], crawl=True, crawl_depth=1)
    assert set(docs) == {site.url(p) for p in ["/docs/index.html", "/docs/a.html", "/docs/b.html"]}
    assert not site.requests_to("/blog/c.html")

    docs, _ = ingest(tmp_path, [site.url("/docs/index.html")], crawl=True, crawl_scope="host")
    assert {site.url("/docs/deep.html"), site.url("/blog/c.html")} <= set(docs)

    docs, stats = ingest(tmp_path, [site.url("/docs/index.html")], crawl=True, max_pages=2)
    assert len(docs) == 2 and stats["web"]["truncated_at_max_pages"] == [site.url("/docs/index.html")]


def test_url_list_file_canonical_urls_and_a_bad_line(tmp_path, site):
    r = site.routes
    r["/a.html"] = Route(page("A", "The canonical copy of the article.", canonical="/article"))
    r["/a.html?utm=mail"] = Route(page("A", "The canonical copy of the article.", canonical="/article"))
    (tmp_path / "urls.txt").write_text(f"# our pages\n{site.url('/a.html')}\n\n{site.url('/a.html?utm=mail')}\n")
    docs, stats = ingest(tmp_path, ["urls.txt"])
    assert set(docs) == {site.url("/article")} and docs[site.url("/article")].url == site.url("/a.html")
    assert stats["web_problems"] == [
        {"url": site.url("/a.html?utm=mail"), "outcome": "duplicate", "reason": f"same page as {site.url('/a.html')} "
         "(canonical URL)"}
    ]  # fmt: skip

    (tmp_path / "urls.txt").write_text(f"{site.url('/a.html')}\nftp://example.org/file\n")
    with pytest.raises(SourceError, match=r"urls.txt, line 2: 'ftp://example.org/file' is not an http\(s\) URL"):
        ingest(tmp_path, ["urls.txt"])


def test_rate_limit_retry_after_and_an_unreadable_robots_txt(tmp_path, site):
    r = site.routes
    r["/robots.txt"] = Route("User-agent: *\nAllow: /\n", ctype="text/plain")
    for i in range(5):
        r[f"/p{i}.html"] = Route(page(f"P{i}", f"Page number {i} of a small site."))
    r["/busy.html"] = Route(page("Busy", "Asks the client to come back later."), fail_first=1, retry_after="0")
    paths = [*(f"/p{i}.html" for i in range(5)), "/busy.html"]
    (tmp_path / "urls.txt").write_text("\n".join(site.url(p) for p in paths))
    docs, _ = ingest(tmp_path, ["urls.txt"], per_host_rps=20)
    starts = sorted(h.at for h in site.hits)
    assert starts[-1] - starts[0] >= (len(starts) - 1) * 0.05 - 0.02  # 20 requests per second, host-wide
    assert docs[site.url("/busy.html")].status == "ok" and len(site.requests_to("/busy.html")) == 2

    r["/robots.txt"].status = 503  # robots.txt unreadable: nothing is fetched, every page keeps its last version
    before = len(site.hits)
    docs, stats = ingest(tmp_path, ["urls.txt"])
    assert {h.path for h in site.hits[before:]} == {"/robots.txt"}
    assert len(docs) == 6 and all(d.status == "ok" for d in docs.values())
    assert {p["outcome"] for p in stats["web_problems"]} == {"kept"}


def test_sitemap_index_gzip_and_url_helpers():
    index = b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>https://h/s1.xml</loc></sitemap></sitemapindex>'  # noqa: E501
    assert parse_sitemap(index, 10_000) == ["https://h/s1.xml"]
    assert parse_sitemap(gzip.compress(b"<urlset><url><loc> https://h/a </loc></url></urlset>"), 10_000) == [
        "https://h/a"
    ]
    assert parse_sitemap(b"<html><body>not a sitemap</body></html>", 10_000) is None
    assert normalize_url("HTTPS://User:pw@Example.ORG:443/a?q=1#top") == "https://example.org/a?q=1"
    assert normalize_url("http://example.org") == "http://example.org/"
    assert in_scope("https://h/docs/x/y.html", "https://h/docs/index.html", "prefix")
    assert not in_scope("https://h/blog/y.html", "https://h/docs/index.html", "prefix")
    assert in_scope("https://h/blog/y.html", "https://h/docs/index.html", "host")
    assert not in_scope("https://other/docs/y.html", "https://h/docs/index.html", "host")


def test_broken_links_redirects_past_robots_and_a_sitemap_that_breaks(tmp_path, site):
    r = site.routes
    r["/robots.txt"] = Route("User-agent: *\nDisallow: /private/\n", ctype="text/plain")
    r["/a.html"] = Route(page("A", "A page whose links are broken.", ("http://h:80x/", "http://[::1/", "b.html")))
    r["/b.html"] = Route(page("B", "The page A links to."))
    r["/pub.html"] = Route(location="/private/x.html")
    r["/private/x.html"] = Route(page("X", "Reached only through a redirect."))
    r["/big-error.html"] = Route(page("Big", "A page that later fails with a big error page."))
    r["/sitemap.xml"] = Route(sitemap(site, ["/a.html", "/pub.html", "/big-error.html"]), ctype="application/xml")
    docs, _ = ingest(tmp_path, [site.url("/sitemap.xml")], crawl=True)
    ok = {site.url(p) for p in ("/a.html", "/b.html", "/big-error.html")}
    assert {d for d, doc in docs.items() if doc.status == "ok"} == ok
    assert (
        docs[site.url("/pub.html")].status == "skipped" and "robots.txt disallows" in docs[site.url("/pub.html")].reason
    )
    assert not site.requests_to("/private/x.html")

    r["/sitemap.xml"] = Route("<html><body>Down for maintenance</body></html>")  # 200, but no sitemap
    r["/big-error.html"] = Route("x" * 50_000, status=503)
    docs, stats = ingest(tmp_path, [site.url("/sitemap.xml")], crawl=True)
    assert docs[site.url("/big-error.html")].status == "ok"  # a 503 with a big body is a failure, not a too-large page
    assert {d for d, doc in docs.items() if doc.status == "ok"} >= {site.url("/a.html"), site.url("/b.html")}
    kept = {p["url"]: p["reason"] for p in stats["web_problems"] if p["outcome"] == "kept"}
    assert "no longer parses as a sitemap" in kept[site.url("/sitemap.xml")]

    (tmp_path / "web.json").write_text('{"version": 1, "pages": []}')
    with pytest.raises(SourceError, match="web.json: the web sources' state is unreadable.*Delete it"):
        ingest(tmp_path, [site.url("/sitemap.xml")])


def test_bad_urls_are_refused_with_the_field_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="carries credentials"):
        IngestParams(sources=["https://user:secret@example.org/docs"])
    with pytest.raises(ValueError, match="not a well-formed URL"):
        IngestParams(sources=["https://example.org:80x/docs"])
    (tmp_path / "urls.txt").write_bytes(b"https://example.org/\xff\n")
    with pytest.raises(SourceError, match="urls.txt: not UTF-8 text"):
        ingest(tmp_path, ["urls.txt"])
