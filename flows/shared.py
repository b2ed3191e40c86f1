"""Prefect pieces both flows use: the stage task policy, the GX quality artifacts, recording a version."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runtime import console_stage
from tasks.core.config import Params
from tasks.core.errors import VersionError
from tasks.core.workspace import Layout, write_json
from tasks.versioning import Repo

P = ParamSpec("P")
R = TypeVar("R")


def stage_task(
    name: str, label: str | None = None, task_run_name: str | None = None
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A Prefect task for a stage, shown as row `label` in the terminal's progress display. Stages write files
    (DVC's unit of caching) and the store, so Prefect must always run them, never replay a cached result."""

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        if label:
            inner = fn

            @functools.wraps(inner)
            def shown(*args: P.args, **kwargs: P.kwargs) -> R:
                with console_stage(label):
                    return inner(*args, **kwargs)

            fn = shown
        return task(name=name, task_run_name=task_run_name, cache_policy=NO_CACHE)(fn)

    return decorate


def publish_params(params: Params, save_to: Path | None = None) -> None:
    """The resolved params: logged (the terminal shows them with --verbose), kept as an artifact of the run in
    the Prefect UI, and saved beside the outputs when `save_to` is given."""
    text = json.dumps(params.as_dict(), indent=2)
    if save_to:
        write_json(save_to, params.as_dict())
    get_run_logger().info("resolved params:\n%s", text)
    create_markdown_artifact(key="resolved-params", markdown=f"# Resolved params\n\n```json\n{text}\n```\n")


@stage_task(name="record_version")
def record_version(ws: Layout, params: Params, kind: str, name: str, summary: dict) -> dict | None:
    """Commit, tag and push this run's outputs as version `<kind>/<name>` (when versioning is enabled)."""
    if not params.versioning.enabled:
        return None
    repo = Repo(ws.root)
    if not repo.available():
        raise VersionError(
            f"versioning.enabled: {ws.root} is not a git repository with DVC initialised "
            "(run `git init && dvc init`), or set versioning.enabled=false."
        )
    entry = repo.record(kind, name, summary, push=params.versioning.push)
    create_markdown_artifact(
        key=f"{kind}-version",
        markdown=(
            f"# Version `{entry['version']}`\n\ncommit `{entry['commit']}`, pushed to the DVC remote: "
            f"{entry['pushed']}\n\nFetch it anywhere in this repo: `ragtune pull {entry['version']} --out DIR`\n"
        ),
    )
    return entry


def publish_quality(report_path: Path, prefix: str, what: str) -> None:
    """Quality summary and a link to the GX Data Docs, shown whether the gate passed or failed."""
    if not report_path.exists():
        return
    q = json.loads(report_path.read_text())
    rows = [
        {
            "table": r["table"],
            "expectation": r["expectation"],
            "column": r["column"] or "",
            "success": r["success"],
            "unexpected": r["unexpected_count"],
        }
        for r in q["expectations"]
    ]
    create_table_artifact(
        key=f"{prefix}-quality",
        table=rows,
        description=f"{what} {'passed' if q['success'] else 'FAILED'}; Data Docs: {q['data_docs']}",
    )
    create_link_artifact(
        key=f"{prefix}-data-docs", link=Path(q["data_docs"]).resolve().as_uri(), link_text="GX Data Docs"
    )
