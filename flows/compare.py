"""Prefect flow `compare`: answer a QA set in each mode (base, rag, ft, hybrid) -> costs from lineage -> recommend."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.runtime import prefect_progress
from flows.shared import stage_task
from tasks.answer import compare as C
from tasks.answer.answerer import Answerer
from tasks.answer.profile import build_profile
from tasks.core.config import Params, load_params, resolve_path
from tasks.core.errors import RagtuneError
from tasks.core.qa import read_qa_set
from tasks.core.workspace import Layout, write_json
from tasks.kb.retrieval import without_query_cache


@stage_task(name="answer_questions", task_run_name="answer_questions[{mode}]")
def answer_questions(answerer: Answerer, mode: str, rows: list[dict], k: int) -> dict:
    result = C.evaluate_mode(answerer.answer_many, mode, rows, k, prefect_progress(f"compare-{mode}"))
    get_run_logger().info("%s: %s", mode, {key: v for key, v in result.items() if key != "samples"})
    return result


@stage_task(name="recommend")
def recommend(ws: Layout, params: Params, results: list[dict], rows: list[dict], qa_file: str, seconds: float) -> dict:
    costs = C.lineage_costs(ws, params)
    try:  # the counts only: no sources read, no models loaded
        profile = build_profile(ws, params, rows, qa_file, full=False)
    except RagtuneError as exc:  # a profile is advice: its failure never costs the measured comparison
        get_run_logger().warning("data profile skipped: %s", exc)
        profile = None
    report = {
        "qa_file": qa_file,
        "questions": results[0]["questions"],
        "k": params.generate.passages,
        "modes": results,
        "costs": costs,
        "profile": profile,
        "recommendation": C.recommend(results, costs, params.compare, profile),
        "seconds": round(seconds, 1),
    }
    write_json(ws.metrics_dir / "compare.json", report)
    create_table_artifact(
        key="compare-modes",
        table=C.comparison_rows(report),
        description=f"accuracy, recall and latency per mode on {qa_file}",
    )
    create_markdown_artifact(key="compare-summary", markdown=C.comparison_markdown(report))
    return report


@flow(name="compare", log_prints=True)
def compare(
    root: str = ".",
    qa_file: str = "data/sample/questions.jsonl",
    overrides: list[str] | None = None,
    adapter: str | None = None,
) -> dict:
    """RAG, fine-tune or both: measure every mode on the user's own questions and recommend one."""
    started = time.perf_counter()
    ws = Layout(Path(root).resolve())
    params = without_query_cache(load_params(ws.root / "params.yaml", overrides or []))
    rows = read_qa_set(resolve_path(ws.root, qa_file))
    answerer = Answerer(ws.root, params, adapter)
    C.check_heldout(answerer.adapter_for, params.compare.modes, rows, qa_file)  # before any model loads
    try:
        k = params.generate.passages  # recall of the passages each answer was given
        results = [answer_questions(answerer, mode, rows, k) for mode in params.compare.modes]
    finally:
        answerer.close()
    return recommend(ws, params, results, rows, qa_file, time.perf_counter() - started)
