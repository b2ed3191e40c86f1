"""A DVC remote that is down at push, and secrets that must never reach logs, reports or Prefect artifacts."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class RefusingQdrant(BaseHTTPRequestHandler):
    """Stands where a Qdrant server would: records each request's api-key header, answers 401 Unauthorized."""

    keys_seen: list[str] = []

    def _refuse(self) -> None:
        self.keys_seen.append(self.headers.get("api-key", ""))
        body = json.dumps({"status": {"error": "Unauthorized"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _refuse

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def refusing_qdrant():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingQdrant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RefusingQdrant.keys_seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_secrets_never_reach_logs_reports_or_artifacts(project, prefect_harness, refusing_qdrant, monkeypatch, caplog):
    """A successful run (local store) and a failing one (a server that sees the key and refuses it): no log,
    report, artifact, parameter or file of either holds a secret."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    caplog.set_level("DEBUG")
    (project / "data/sample/corpus/product/warranty.txt").write_text("Warranty: five years, parts and labour.\n")
    ok = kb_refresh(root=str(project), return_state=True)
    assert ok.is_completed()

    monkeypatch.setenv("QDRANT_URL", refusing_qdrant)
    failed = kb_refresh(root=str(project), overrides=["index.retries=0"], return_state=True)
    assert failed.is_failed() and "401" in failed.message, failed.message
    assert RefusingQdrant.keys_seen and set(RefusingQdrant.keys_seen) == {SECRETS["QDRANT_API_KEY"]}

    APILogHandler().flush()  # the failure's own log lines (the likeliest leak) must be on the server before reading
    texts = [r.getMessage() for r in caplog.records] + [failed.message or ""]
    texts += [p.read_text(errors="replace") for p in (project / "data").rglob("*.json")]
    with get_client(sync_client=True) as client:
        for state in (ok, failed):
            run_id = state.state_details.flow_run_id
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))  # this run's, all
            artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            assert len(logs) > 5 and len(artifacts) >= 3, "both runs' logs and artifacts were read"
            texts += [log.message for log in logs] + [json.dumps(client.read_flow_run(run_id).parameters)]
            texts += [json.dumps(a.data, default=str) + (a.description or "") for a in artifacts]
            if state is failed:
                assert any("401" in log.message for log in logs), "the failure's own lines were read"
    for secret in SECRETS.values():
        assert not any(secret in t for t in texts), "a secret leaked"
