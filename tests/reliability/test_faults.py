"""Dead vector store, a locked local-mode store, two refreshes at once, a DVC remote that is down, secrets never
leaking."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core.errors import BusyError, StoreError
from tasks.core.workspace import Layout, file_lock
from tasks.kb.store import redact
from tests.flows.helpers import stored_points

from .conftest import refresh

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

SECRET = "qdrant-key-7f3a9c-do-not-log"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


def test_unreachable_server_retries_then_fails_in_one_line_with_index_untouched(project, monkeypatch, caplog):
    manifest = (project / "data/index/manifest.json").read_bytes()
    monkeypatch.setenv("QDRANT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("QDRANT_API_KEY", SECRET)
    caplog.set_level("WARNING", logger="ragtune")
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        refresh(project, "index.retries=2", "index.retry_backoff_s=0.2", "index.timeout_s=2", stages=("index",))
    message = str(err.value)
    assert "failed after 3 attempt(s)" in message and "\n" not in message
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2
    assert time.monotonic() - started >= 0.2 + 0.4, "backoff doubles: 0.2 s then 0.4 s"
    assert SECRET not in message and all(SECRET not in r.getMessage() for r in caplog.records)
    assert (project / "data/index/manifest.json").read_bytes() == manifest


def test_local_mode_store_locked_by_another_process_refuses_cleanly(project):
    """index.engine=local (qdrant-client local mode) still allows one process at a time; the default does not."""
    local = ("index.engine=local", "index.local_path=data/qdrant")
    manifest = (project / "data/index/manifest.json").read_bytes()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from qdrant_client import QdrantClient; "
                f"c = QdrantClient(path={str(project / 'data/qdrant')!r}); print('ready', flush=True); time.sleep(120)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(BusyError, match="in use by another process"):
            refresh(project, *local, stages=("index",))
    finally:
        holder.kill()
        holder.wait()
    assert (project / "data/index/manifest.json").read_bytes() == manifest
    refresh(project, *local, stages=("index", "verify"))  # works again once the other process is gone


def test_two_refreshes_at_once_the_second_refuses(project):
    ws = Layout(project)
    before = stored_points(project)
    with file_lock(ws.index_lock("ragtune"), 0, "held by the first refresh"):  # the first run, mid-index
        with pytest.raises(BusyError, match="another refresh is writing collection 'ragtune'"):
            refresh(project, stages=("index",))
    assert stored_points(project) == before
    refresh(project, stages=("index",))  # the lock died with its holder: the next run proceeds


def test_lock_is_released_when_its_holder_is_killed(project):
    lock = Layout(project).index_lock("ragtune")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from tasks.core.workspace import file_lock\n"
                f"with file_lock(Path({str(lock)!r}), 0, 'busy'):\n    print('held', flush=True); time.sleep(120)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with file_lock(lock, 0, "still held"):
        pass


def test_credentials_in_the_server_url_never_reach_messages():

    assert redact("https://admin:s3cret@qdrant.example.com:6333") == "https://qdrant.example.com:6333"
    assert redact("http://127.0.0.1:6333") == "http://127.0.0.1:6333"
