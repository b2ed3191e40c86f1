"""A DVC remote that is down at push, and secrets that must never reach logs, reports or Prefect artifacts."""

from __future__ import annotations

import json
import shutil

import pytest

from flows.kb_refresh import kb_refresh
from tasks.core.workspace import Layout
from tasks.kb.report import build_report
from tasks.versioning import Repo
from tests.dvc_repo import git_dvc_project

from .conftest import refresh

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

SECRETS = {"QDRANT_API_KEY": "qdrant-key-7f3a9c-do-not-log", "AWS_SECRET_ACCESS_KEY": "aws-secret-51de-do-not-log"}


def test_remote_down_at_push_keeps_the_version_and_the_next_run_pushes_it(project, tmp_path, caplog):
    remote = tmp_path / "remote"
    remote.write_text("a file where the remote directory should be\n")  # the remote is down: pushes fail
    git_dvc_project(project, remote, commit=True)
    caplog.set_level("WARNING", logger="ragtune")
    repo = Repo(project)
    build_report(Layout(project))  # what the flow writes before recording a version
    first = repo.record("kb", "first", {"points": 1})
    assert first["pushed"] is False and any("dvc push failed" in r.getMessage() for r in caplog.records)
    manifest = (project / "data/index/manifest.json").read_bytes()
    assert [v["version"] for v in repo.versions()] == ["kb/first"]  # committed and tagged despite the push

    remote.unlink()
    remote.mkdir()  # the remote is back, same URL
    (project / "data/sample/corpus/product/warranty.txt").write_text("Warranty: ten years from November.\n")
    refresh(project)
    build_report(Layout(project))
    second = repo.record("kb", "second", {"points": 2})
    assert second["pushed"] is True
    shutil.rmtree(project / ".dvc/cache")  # the first version must now come from the remote
    out = tmp_path / "pulled"
    repo.pull("kb/first", out)
    assert (out / "data/index/manifest.json").read_bytes() == manifest
    assert any("ERROR" in r.getMessage() for r in caplog.records if "dvc push failed" in r.getMessage())


def test_secrets_never_reach_logs_reports_or_artifacts(project, prefect_harness, monkeypatch, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    caplog.set_level("DEBUG")
    (project / "data/sample/corpus/product/warranty.txt").write_text("Warranty: five years, parts and labour.\n")

    state = kb_refresh(root=str(project), return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs()
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        run = client.read_flow_run(run_id)
    texts = [r.getMessage() for r in caplog.records] + [log.message for log in logs]
    texts += [json.dumps(a.data, default=str) + (a.description or "") for a in artifacts]
    texts += [json.dumps(run.parameters, default=str)]
    texts += [p.read_text(errors="replace") for p in (project / "data").rglob("*.json")]
    assert len(artifacts) >= 5 and len(logs) > 10
    for secret in SECRETS.values():
        assert not any(secret in t for t in texts), "a secret leaked"
