"""Prefect flow `profile` (module data_profile: a module named profile would shadow the stdlib one that cProfile
imports): the knowledge base, the training data and a QA file, measured -> advice -> artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.shared import stage_task
from tasks.answer.profile import build_profile, profile_markdown, profile_rows
from tasks.core.config import Params, load_params
from tasks.core.qa import read_qa_set
from tasks.core.workspace import Layout, write_json


@stage_task(name="profile_data", label="profile")
def profile_data(ws: Layout, params: Params, qa_file: str | None) -> dict:
    rows = read_qa_set(Path(qa_file)) if qa_file else None
    profile = build_profile(ws, params, rows, qa_file)
    write_json(ws.profile_report, profile)
    create_table_artifact(key="data-profile", table=profile_rows(profile), description="ragtune profile")
    create_markdown_artifact(key="data-profile-advice", markdown=profile_markdown(profile))
    for line in profile["advice"]:
        get_run_logger().info("advice: %s", line)
    return profile


@flow(name="profile", log_prints=True)
def profile(root: str = ".", qa_file: str | None = None, overrides: list[str] | None = None) -> dict:
    """Profile the data before choosing RAG, fine-tuning or both; `compare` quotes the advice."""
    ws = Layout(Path(root).resolve())
    params = load_params(ws.root / "params.yaml", overrides or [])
    return profile_data(ws, params, qa_file)
