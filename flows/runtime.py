"""Process setup shared by the CLI and the flows: environment, Prefect server discovery, progress reporting."""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Protocol
from uuid import UUID

from tasks.core.config import EmbedParams, load_params
from tasks.core.errors import ConfigError, RagtuneError
from tasks.core.stage import OnProgress
from tasks.kb.embedder import ensure_int8_model

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


# --- the temporary Prefect API: a flow run needs an API; without a configured one, Prefect starts its own server at
# the run's first API call and the run waits for it (5 s, 15 s for a new project's database). Started here instead,
# when the command begins, it comes up on the other core while this process imports the flow and its libraries.
class TemporaryApi:
    """Prefect's own temporary server (its API app under uvicorn, no UI, the project's SQLite database), as
    `prefect.server.api.server.SubprocessASGIServer` runs it; stopped when this process exits."""

    def __init__(self, home: Path):
        self.log = home / "temporary-api.log"
        with socket.socket() as s:  # a free port (Prefect picks one the same way)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
        with self.log.open("w") as log_file:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        atexit.register(self.stop)

    def ready(self) -> bool:
        """Whether the server passes its health check."""
        return _answers(self.url, timeout=0.5)

    def wait(self, preload: Iterable[str] = ()) -> None:
        """Import `preload` (modules the run needs) while the server starts, then wait until it answers."""
        for module in preload:
            if self.ready():
                break
            importlib.import_module(module)
        limit = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
        deadline = time.monotonic() + limit
        while not self.ready():
            code = self.proc.poll()
            if code is not None or time.monotonic() > deadline:
                why = f"exited with code {code}" if code is not None else f"did not answer within {limit:.0f} s"
                raise RagtuneError(
                    f"Prefect's temporary API server {why}; its log is {self.log}. Start `ragtune server` (or "
                    "export PREFECT_API_URL) and run again."
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server and wait for it (SQLite is left consistent)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_api: TemporaryApi | None = None


def start_temporary_api() -> None:
    """Start the temporary API now when the run would otherwise start it (no PREFECT_API_URL in the environment or
    the active Prefect profile, no `ragtune server` for this project); PREFECT_API_URL then names it for this
    process. Call it before Prefect is imported (its settings are read once). A new project's database starts as
    a copy of the migrated template (`make install` builds it), so its first run skips Prefect's migrations."""
    global _api
    home = Path(os.environ["PREFECT_HOME"])
    if _api is not None or os.environ.get("PREFECT_API_URL") or profile_api_url(home):
        return
    home.mkdir(parents=True, exist_ok=True)
    seed_database(home)
    _api = TemporaryApi(home)
    os.environ["PREFECT_API_URL"] = _api.url


def profile_api_url(home: Path) -> str | None:
    """PREFECT_API_URL of the active Prefect profile (`prefect config set`), if it sets one."""
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    return data.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")


def wait_for_api(preload: Iterable[str] = ()) -> None:
    """Before a flow runs: the temporary API answers (a no-op when none was started here)."""
    if _api is not None:
        _api.wait(preload)


def database_template() -> Path:
    """The migrated, empty Prefect database for the installed Prefect version (built by `make install`)."""
    return Path(sys.prefix) / "share/ragtune" / f"prefect-{metadata.version('prefect')}.db"


def seed_database(home: Path) -> bool:
    """Copy the template into a project that has no Prefect database yet (the default SQLite one only). The copy
    gets its final name by a hard link, which fails if another run's database got there first."""
    target, template = home / "prefect.db", database_template()
    if target.exists() or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL") or not template.is_file():
        return False
    for stale in (home / "prefect.db-wal", home / "prefect.db-shm"):  # a journal without its database
        stale.unlink(missing_ok=True)
    part = home / f"prefect.db.part-{os.getpid()}"
    shutil.copyfile(template, part)
    try:
        os.link(part, target)
    except FileExistsError:
        return False
    finally:
        part.unlink()
    return True


def build_database_template() -> Path:
    """Run Prefect's migrations into a new database and keep it as the template (once per Prefect version)."""
    template = database_template()
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        cmd = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RagtuneError(
                f"Prefect's migrations failed (exit {done.returncode}):\n{done.stderr[-2000:]}\nReinstall with "
                "`make install`; until then each new project migrates its own database."
            )
        db = Path(home) / "prefect.db"
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the one file
        part = template.with_suffix(".db.part")
        shutil.copyfile(db, part)
        part.replace(template)
    return template


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


if __name__ == "__main__":  # `make install`: what a first run would otherwise build (python -m flows.runtime)
    print(f"Prefect database template: {build_database_template()}")
    project = Path("params.yaml")  # the repository's own when run by `make install`
    embed = load_params(project).embed if project.exists() else EmbedParams()
    if embed.backend == "openvino-int8":
        print(f"int8 encoder of {embed.model}: {ensure_int8_model(embed.model)}")
