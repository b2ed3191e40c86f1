"""Operations: run one stage (what dvc.yaml calls), list and pull versions, serve the schedules, run the server."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import typer

from flows.cli.common import (
    OVERRIDES_ARG,
    PARAMS_OPT,
    app,
    err,
    friendly_errors,
    out,
    print_table,
    progress_bars,
    project_root,
)
from flows.runtime import (
    SERVER_FILE,
    console_progress,
    console_stage,
    log_level,
    require_prefect_server,
    seed_database,
)
from tasks.core.config import ConfigError, Params, load_params
from tasks.core.errors import EXIT_INTERRUPTED
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.kb.report import build_report, report_markdown
from tasks.pipeline import STAGES, get_stage, run_stage, stage_names
from tasks.versioning import KINDS, Repo


@app.command()
def stage(
    name: str = typer.Argument(..., help=" | ".join(STAGES), show_default=False),
    overrides: list[str] | None = OVERRIDES_ARG,
    allow_mass_delete: bool = typer.Option(False, "--allow-mass-delete", help="See `ragtune refresh --help`."),
    rebuild: bool = typer.Option(False, "--rebuild", help="index: see `ragtune refresh --help`."),
    params: Path = PARAMS_OPT,
) -> None:
    """Run one pipeline stage without Prefect (this is what dvc.yaml calls)."""
    with friendly_errors():
        root = project_root(params)
        get_stage(name)  # an unknown name fails before anything loads
        level = log_level()
        logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
        logging.getLogger("ragtune").setLevel(level)  # no Prefect UI here: the terminal is the only reader
        p = load_params(params, list(overrides or []))
        with progress_bars(), console_stage(name):
            stats = run_stage(name, StageContext(Layout(root), p, console_progress(name), allow_mass_delete, rebuild))
        if name == stage_names("kb", optional=False)[-1]:  # the refresh is complete: show its report
            err.print(report_markdown(build_report(Layout(root))), highlight=False)
        else:
            err.print(json.dumps({k: v for k, v in stats.items() if k != "drops"}, default=str), highlight=False)


@app.command()
def versions(
    kind: str | None = typer.Option(None, "--kind", help="kb | model (default: both)."),
    json_out: bool = typer.Option(False, "--json", help="Print the versions as a JSON list."),
    params: Path = PARAMS_OPT,
) -> None:
    """List recorded versions (git tags kb/* and model/*), newest first, with their key metrics."""
    with friendly_errors():
        root = project_root(params)

        if kind and kind not in KINDS:
            raise ConfigError(f"--kind {kind}: expected one of {', '.join(KINDS)}.")
        repo = Repo(root)
        found = repo.versions(kind)
        if not found:
            err.print(no_versions_hint(repo, load_params(params), kind), highlight=False, soft_wrap=True)
        if json_out:
            out.print_json(json.dumps(found))
            return
        if not found:
            return
        print_table(
            f"versions in {root}",
            ("version", "at", "metrics"),
            [
                {
                    "version": v["version"],
                    "at": v.get("at", ""),
                    "metrics": " ".join(f"{k}={x}" for k, x in v.get("metrics", {}).items()),
                }
                for v in found
            ],
        )


def no_versions_hint(repo: Repo, p: Params, kind: str | None) -> str:
    """Why `ragtune versions` lists nothing, and the step that records the first version."""
    what = f"no {kind} versions" if kind else "no versions"
    if not p.versioning.enabled:
        return (
            f"{what}: versioning is off. Set `versioning.enabled: true` in params.yaml (in a git repository "
            "with `dvc init` done); then every successful refresh or retrain is committed, tagged and pushed. "
            "Versioned runs refuse key=value overrides and --source: a version records params.yaml in dvc.lock as "
            "the truth, so put such settings into params.yaml instead."
        )
    if not repo.available():
        return f"{what}: {repo.root} is not a git repository with DVC initialised; run `git init && dvc init`."
    return f"{what} yet: run `ragtune refresh` or `ragtune retrain`; each successful run records one."


@app.command()
def pull(
    version: str = typer.Argument(..., help="A version from `ragtune versions`, e.g. kb/20261121T020000Z."),
    out_dir: Path = typer.Option(Path("pulled"), "--out", help="Folder to write into (same relative paths)."),
    params: Path = PARAMS_OPT,
) -> None:
    """Fetch a version's artifacts (index manifest + metrics, or adapter + metrics) exactly as the run wrote them."""
    with friendly_errors():
        root = project_root(params)

        for path in Repo(root).pull(version, out_dir):
            out.print(str(path), highlight=False)


@app.command()
def serve(params: Path = PARAMS_OPT) -> None:
    """Register and run the deployments: nightly kb_refresh (cron), watch (interval), retrain (on new data)."""
    with friendly_errors():
        root = project_root(params)

        p = load_params(params)
        url = require_prefect_server("serve registers schedules and event triggers on a Prefect server")
        from prefect import serve as prefect_serve

        from flows.deployments import build_deployments

        deployments = build_deployments(root, p)
        err.print(
            f"serving {', '.join(d.name for d in deployments)} for {root} at {url} (Ctrl-C pauses the schedules)",
            highlight=False,
        )
        prefect_serve(*deployments)


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(4200, help="Port for the API and UI."),
    params: Path = PARAMS_OPT,
) -> None:
    """Start the Prefect server and UI (SQLite under .prefect/); later ragtune runs report to it."""
    root = project_root(params)
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    seed_database(home)  # a new project's database from the migrated template
    url = f"http://{host}:{port}/api"
    state = home / SERVER_FILE
    state.write_text(json.dumps({"api_url": url, "pid": os.getpid()}))
    err.print(
        f"Prefect UI: http://{host}:{port}  (runs from {root} report here; elsewhere export PREFECT_API_URL={url})"
    )
    try:
        env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_UI_API_URL": url}  # the UI's browser calls this
        proc = subprocess.run(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)], env=env
        )
        raise typer.Exit(proc.returncode)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        state.unlink(missing_ok=True)
