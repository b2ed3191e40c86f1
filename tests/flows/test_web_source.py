"""kb_refresh over a web source served by a real local http.server: the index follows the site, a 304 costs no
embedding, a removed page leaves the index, and a page that is down keeps its last good version."""

from __future__ import annotations

import pytest

from flows.kb_refresh import kb_refresh
from tests.website import Route, Site, page

from .helpers import stored_points

pytestmark = pytest.mark.slow

ARTICLES = {
    "/kb/heron.html": ("Heron thermostat", "The Heron thermostat pairs over 2.4 GHz Wi-Fi and supports dual-fuel heat "
                       "pumps. Its schedule holds up to six periods per day."),
    "/kb/allowance.html": ("On-call allowance", "The on-call allowance is 150 EUR per week, paid with the next "
                           "salary. Public holidays on call add 50 EUR per day."),
    "/kb/falcon.html": ("Falcon retirement", "The Falcon thermostat was retired in 2025. Existing units receive "
                        "security updates until the end of 2027."),
    "/kb/vacation.html": ("Vacation mode", "Vacation mode keeps the home at 15 degrees until the return date set "
                          "in the app, then resumes the schedule two hours before arrival."),
}  # fmt: skip
WEB = ["ingest.web.per_host_rps=100", "ingest.web.retries=1", "ingest.web.backoff_s=0.05", "retrieve.qa_file=null"]


@pytest.fixture
def site():
    s = Site()
    for path, (title, text) in ARTICLES.items():
        s.routes[path] = Route(page(title, text), etag=f'"{path}-1"')
    locs = "".join(f"<url><loc>{s.url(p)}</loc></url>" for p in ARTICLES)
    s.routes["/sitemap.xml"] = Route(f"<urlset>{locs}</urlset>", ctype="application/xml")
    yield s
    s.close()


def by_doc(points: dict[str, dict]) -> dict[str, str]:
    return {p["doc_id"]: p["text"] for p in points.values()}


def test_refresh_follows_a_website(workspace, site):
    sources = [site.url("/sitemap.xml")]
    first = kb_refresh(root=str(workspace), sources=sources, overrides=WEB)
    assert first["documents"]["added"] == 4 and first["web"]["fetched"] == 4
    assert set(by_doc(stored_points(workspace))) == {site.url(p) for p in ARTICLES}

    again = kb_refresh(root=str(workspace), sources=sources, overrides=WEB)
    assert again["web"]["not_modified"] == 4 and again["chunks"]["embedded"] == 0
    assert again["points"]["written"] == 0 and again["documents"]["unchanged"] == 4

    site.routes["/kb/allowance.html"] = Route(
        page("On-call allowance", "The on-call allowance is 175 EUR per week since January."), etag='"a-2"'
    )
    del site.routes["/kb/falcon.html"]  # 404: gone
    site.routes["/kb/vacation.html"].status = 503  # down: keeps its last good version
    third = kb_refresh(root=str(workspace), sources=sources, overrides=WEB)
    docs = by_doc(stored_points(workspace))
    assert site.url("/kb/falcon.html") not in docs and third["documents"]["removed"] == 1
    assert "175 EUR" in docs[site.url("/kb/allowance.html")] and third["documents"]["changed"] == 1
    assert "15 degrees" in docs[site.url("/kb/vacation.html")]
    problems = {p["url"]: p["outcome"] for p in third["web_problems"]}
    assert problems == {site.url("/kb/falcon.html"): "gone", site.url("/kb/vacation.html"): "kept"}
    assert third["web"] == {"fetched": 1, "gone": 1, "kept": 1, "unchanged": 1, "requests": 7, "not_modified": 1}
