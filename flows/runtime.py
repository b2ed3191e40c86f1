"""Process setup shared by the CLI and the flows: environment, Prefect server discovery, progress reporting."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from tasks.core.stage import OnProgress

SERVER_FILE = "ragtune-server.json"  # written by `ragtune server` under PREFECT_HOME


def configure_environment(root: Path) -> None:
    """Set defaults before Prefect/GX/HF are imported; anything the user exported wins."""
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),  # one project, one Prefect database and result store
        "PREFECT_LOGGING_EXTRA_LOGGERS": "ragtune",  # stage logs appear in the Prefect UI
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # the first SQLite migration is slow
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("PREFECT_API_URL"):
        url = running_server_url(Path(os.environ["PREFECT_HOME"]))
        if url:
            os.environ["PREFECT_API_URL"] = url


def running_server_url(prefect_home: Path) -> str | None:
    """The API URL of a `ragtune server` started for this project, if it answers its health check."""
    state = prefect_home / SERVER_FILE
    if not state.exists():
        return None
    try:
        url = json.loads(state.read_text())["api_url"]
        with urllib.request.urlopen(f"{url}/health", timeout=0.5) as resp:
            return url if resp.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


# --- progress: the CLI installs a rich bar factory; Prefect tasks add a progress artifact.
_console_bar: Callable[[str], Callable[[int, int], None]] | None = None


def set_console_progress(factory: Callable[[str], Callable[[int, int], None]] | None) -> None:
    global _console_bar
    _console_bar = factory


def console_progress(label: str) -> OnProgress:
    return _console_bar(label) if _console_bar else None


def prefect_progress(label: str) -> Callable[[int, int], None]:
    """Progress callback that also keeps a Prefect progress artifact current (throttled to ~2 updates/s)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    bar = console_progress(label)
    artifact: UUID | None = None
    last = 0.0

    def update(done: int, total: int) -> None:
        nonlocal artifact, last
        if bar:
            bar(done, total)
        pct = 100.0 if total == 0 else 100.0 * done / total
        now = time.monotonic()
        if artifact is None:
            artifact = create_progress_artifact(
                progress=pct, key=f"{label}-progress", description=f"{label}: {done}/{total}"
            )
        elif pct >= 100.0 or now - last > 0.5:
            update_progress_artifact(artifact, progress=pct, description=f"{label}: {done}/{total}")
        else:
            return
        last = now

    return update
