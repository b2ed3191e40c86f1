"""Process setup shared by the CLI and the flows: environment, Prefect server discovery, progress reporting."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol
from uuid import UUID

from tasks.core.errors import ConfigError
from tasks.core.stage import OnProgress

SERVER_FILE = "ragtune-server.json"  # written by `ragtune server` under PREFECT_HOME


def verbosity() -> str:
    """quiet (the default: one progress display and the result), verbose (+ INFO logs, the resolved params) or
    debug (+ DEBUG logs, the traceback of an expected error). Set by --verbose/--debug or RAGTUNE_DEBUG=1."""
    if os.environ.get("RAGTUNE_DEBUG", "") not in ("", "0"):
        return "debug"
    return "verbose" if os.environ.get("RAGTUNE_VERBOSE", "") not in ("", "0") else "quiet"


def log_level() -> int:
    """The lowest level the terminal shows: WARNING when quiet, INFO with --verbose, DEBUG with --debug."""
    return {"quiet": logging.WARNING, "verbose": logging.INFO, "debug": logging.DEBUG}[verbosity()]


def _deepspeed_errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def configure_environment(root: Path) -> None:
    """Set defaults before Prefect/GX/HF are imported; anything the user exported wins."""
    level = logging.getLevelName(log_level())
    if level == "WARNING":  # the terminal only; Prefect's API (the UI) still gets every record
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", level)
    else:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = level
    if level == "DEBUG":
        os.environ["PREFECT_LOGGING_LEVEL"] = "DEBUG"
    logging.getLogger("ragtune").setLevel(min(logging.INFO, log_level()))  # INFO reaches the Prefect UI
    if level == "WARNING":  # quiet: the rich display is the one progress display; library chatter is for -v
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
        warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notes to their callers
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="OMP_NUM_THREADS/MKL_NUM_THREADS unset")  # accelerate's note
        logging.getLogger("DeepSpeed").addFilter(_deepspeed_errors_only)  # a set: added once however often
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


def require_prefect_server(why: str) -> str:
    """The API URL of a Prefect server that answers (environment or Prefect profile), or a ConfigError that says
    how to start one. Schedules and events need a real server; the temporary one a flow run starts is gone after."""
    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            f"{why}, but no Prefect server is running. Start `ragtune server` in another terminal, or export "
            "PREFECT_API_URL=http://HOST:4200/api."
        )
    if not _answers(url, timeout=2):
        raise ConfigError(
            f"{why}, but the Prefect server at {url} does not answer. Start it (`ragtune server`) "
            "or fix PREFECT_API_URL."
        )
    return url


def running_server_url(prefect_home: Path) -> str | None:
    """The API URL of a `ragtune server` started for this project, if it answers its health check."""
    state = prefect_home / SERVER_FILE
    if not state.exists():
        return None
    try:
        url = json.loads(state.read_text())["api_url"]
    except (OSError, ValueError, KeyError):
        return None
    return url if _answers(url, timeout=0.5) else None


def _answers(url: str, timeout: float) -> bool:
    """Whether the Prefect API at `url` passes its health check."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


# --- progress: the CLI installs one terminal display; Prefect tasks also keep a progress artifact current.
class Display(Protocol):
    def row(self, label: str) -> Callable[[int, int], None]:
        """The stage's row (added on first use); the callable reports (done, total)."""
        ...

    def finish(self, label: str, ok: bool) -> None: ...


_display: Display | None = None


def set_console_display(display: Display | None) -> None:
    global _display
    _display = display


def console_progress(label: str) -> OnProgress:
    return _display.row(label) if _display else None


@contextmanager
def console_stage(label: str) -> Iterator[None]:
    """A row in the terminal display for the whole stage, whether or not it reports counts."""
    if _display is None:
        yield
        return
    _display.row(label)
    try:
        yield
    except BaseException:
        _display.finish(label, ok=False)
        raise
    _display.finish(label, ok=True)


def prefect_progress(label: str) -> Callable[[int, int], None]:
    """Progress callback that also keeps a Prefect progress artifact current (throttled to ~2 updates/s)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    bar = console_progress(label)  # the same row as the stage's, when the stage has one
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


class _ReportedByTheCli(logging.Filter):
    """Keeps Prefect's account of a failed run off the terminal: the exception reaches the CLI, which prints it
    once (one line for an expected error, the traceback for a bug). The Prefect UI still gets every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith(("prefect.flow_runs", "prefect.task_runs")) and record.levelno >= 40)


def quiet_prefect_console() -> None:
    """Add the filter to Prefect's console handler (configured when prefect is imported); not under --debug."""
    from prefect.logging.handlers import PrefectConsoleHandler

    if verbosity() == "debug":
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _ReportedByTheCli) for f in handler.filters
        ):
            handler.addFilter(_ReportedByTheCli())
