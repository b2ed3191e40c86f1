"""Whole-flow behaviour with real libraries: Prefect server, local Qdrant, sentence-transformers, GX."""

from __future__ import annotations

import json
import shutil

import pytest

from flows.kb_refresh import kb_refresh
from tasks.core.errors import GateFailed, StoreError

from .helpers import expected_ids, stored_points

pytestmark = pytest.mark.slow

EDITED = "product/heron-troubleshooting.md"
DELETED = "handbook/expense-policy.md"
ADDED = "support/new-article.md"


def test_full_then_unchanged_then_incremental(workspace):
    first = kb_refresh(root=str(workspace))
    points = stored_points(workspace)
    assert first["documents"]["added"] == 31 and first["documents"]["dropped"] == 6
    assert first["chunks"]["embedded"] == first["chunks"]["total"] == len(points) > 0
    assert set(points) == expected_ids(workspace)
    assert json.loads((workspace / "data/metrics/refresh.json").read_text())["points"]["in_index"] == len(points)

    again = kb_refresh(root=str(workspace))
    assert again["chunks"]["embedded"] == 0
    assert again["points"] == {"written": 0, "deleted": 0, "in_index": len(points)}
    assert again["documents"]["unchanged"] == 31
    assert stored_points(workspace) == points  # not even a payload was rewritten
    assert json.loads((workspace / "data/metrics/chunk.json").read_text())["documents_reused"] == 31

    corpus = workspace / "data/sample/corpus"
    old_edited = {pid for pid, p in points.items() if p["doc_id"] == EDITED}
    text = (corpus / EDITED).read_text()
    (corpus / EDITED).write_text(
        text.replace("Heron uses 2.4 GHz Wi-Fi only.", "Heron uses 2.4 GHz and, since firmware 4.3, 5 GHz Wi-Fi.")
    )
    (corpus / DELETED).unlink()
    (corpus / ADDED).write_text(
        "# Vacation mode\n\nVacation mode keeps the home at 15 °C until the return date "
        "set in the app, then resumes the normal schedule two hours before arrival.\n"
    )
    third = kb_refresh(root=str(workspace))
    after = stored_points(workspace)
    assert third["documents"]["added"] == 1 and third["documents"]["changed"] == 1
    assert third["documents"]["removed"] == 1 and third["documents"]["unchanged"] == 29
    assert set(after) == expected_ids(workspace)  # exact point set, nothing stale
    assert not any(p["doc_id"] == DELETED for p in after.values())  # vanished document is gone
    edited = {pid: p for pid, p in after.items() if p["doc_id"] == EDITED}
    assert len({p["doc_hash"] for p in edited.values()}) == 1 and set(edited) != old_edited
    assert any("5 GHz" in p["text"] for p in edited.values())
    assert 0 < third["chunks"]["embedded"] <= 3  # only the new and the edited chunks
    assert any(p["doc_id"] == ADDED for p in after.values())
    assert json.loads((workspace / "data/metrics/chunk.json").read_text())["documents_reused"] == 29


def test_failed_gate_leaves_index_exactly_as_it_was(workspace):
    kb_refresh(root=str(workspace))
    before = stored_points(workspace)
    manifest = (workspace / "data/index/manifest.json").read_bytes()
    bad = workspace / "data/sample/corpus/bad-batch"
    bad.mkdir()
    for i in range(12):  # a sync that delivered empty files: 15 of 49 inputs are empty, above the 20% limit
        (bad / f"export-{i}.txt").write_text("")
    (workspace / "data/sample/corpus/handbook/onboarding.md").write_text("# Onboarding\n\nnew text that must not land")
    with pytest.raises(GateFailed) as exc:
        kb_refresh(root=str(workspace))
    message = str(exc.value)
    assert "share of 'empty' inputs" in message and "validate.max_empty_share=0.2" in message
    assert "data/quality/report.json" in message and "index.html" in message
    assert stored_points(workspace) == before
    assert (workspace / "data/index/manifest.json").read_bytes() == manifest


def test_mass_delete_guard_refuses_then_allows(workspace):
    kb_refresh(root=str(workspace))
    before = stored_points(workspace)
    corpus = workspace / "data/sample/corpus"
    for folder in ("product", "engineering", "handbook"):  # most of the corpus vanished (a half-mounted share)
        shutil.rmtree(corpus / folder)
    with pytest.raises(StoreError, match="mass-deletion guard.*--allow-mass-delete"):
        kb_refresh(root=str(workspace))
    assert stored_points(workspace) == before
    report = kb_refresh(root=str(workspace), allow_mass_delete=True)
    assert report["documents"]["removed"] > 15
    assert set(stored_points(workspace)) == expected_ids(workspace)
