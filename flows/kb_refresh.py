"""Prefect flow `kb_refresh`: ingest -> clean -> validate (GX gate) -> chunk -> embed -> index (staged) -> verify ->
evaluate_retrieval (optional recall gate) -> publish (serve the staged index) -> report."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.embed_shards import shard_mapper
from flows.runtime import prefect_progress
from flows.shared import publish_params, publish_quality, record_version, stage_task
from tasks.core.config import Params, check_versionable, load_run_params, resolve_path
from tasks.core.qa import read_qa_set
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.kb import stages
from tasks.kb.report import append_history, build_report, report_markdown, report_rows


@stage_task(name="ingest_documents", label="ingest")
def ingest_documents(ws: Layout, params: Params) -> dict:
    return stages.run_ingest(StageContext(ws, params, prefect_progress("ingest")))


@stage_task(name="clean_documents", label="clean")
def clean_documents(ws: Layout, params: Params) -> dict:
    return stages.run_clean(StageContext(ws, params))


@stage_task(name="validate_documents", label="validate")
def validate_documents(ws: Layout, params: Params) -> dict:
    try:
        return stages.run_validate(StageContext(ws, params))
    finally:
        publish_quality(ws.quality_report, "kb", "GX gate")


@stage_task(name="chunk_documents", label="chunk")
def chunk_documents(ws: Layout, params: Params) -> dict:
    return stages.run_chunk(StageContext(ws, params, prefect_progress("chunk")))


@stage_task(name="embed_chunks", label="embed")
def embed_chunks(ws: Layout, params: Params) -> dict:
    return stages.run_embed(StageContext(ws, params, prefect_progress("embed")), shard_mapper(params.embed))


@stage_task(name="upsert_points", label="index")
def upsert_points(ws: Layout, params: Params, allow_mass_delete: bool, rebuild: bool) -> dict:
    return stages.run_index(StageContext(ws, params, prefect_progress("index"), allow_mass_delete, rebuild))


@stage_task(name="verify_index", label="verify")
def verify_index(ws: Layout, params: Params) -> dict:
    return stages.run_verify(StageContext(ws, params))


@stage_task(name="evaluate_retrieval", label="eval_retrieval")
def evaluate_retrieval(ws: Layout, params: Params) -> dict:
    return stages.run_eval_retrieval(StageContext(ws, params))


@stage_task(name="publish_index", label="publish")
def publish_index(ws: Layout, params: Params) -> dict:
    return stages.run_publish(StageContext(ws, params))


@stage_task(name="publish_report")
def publish_report(ws: Layout, total_seconds: float) -> dict:
    report = build_report(ws, total_seconds)
    append_history(ws, report)
    create_table_artifact(
        key="kb-refresh-report",
        table=report_rows(report),
        description=f"kb_refresh {report['run_version']}: counts and seconds per stage",
    )
    create_markdown_artifact(key="kb-refresh-summary", markdown=report_markdown(report))
    return report


def resolve_params(ws: Layout, sources: list[str] | None, overrides: list[str] | None) -> Params:
    """params.yaml + --source + key=value, validated, echoed to the log and saved beside the outputs."""
    params = load_run_params(ws.root / "params.yaml", sources, overrides)
    check_versionable(params, overrides, sources)
    if params.retrieve.qa_file:  # a bad QA file must stop the run before the index changes, not after
        read_qa_set(resolve_path(ws.root, params.retrieve.qa_file), "retrieve.qa_file")
    publish_params(params, save_to=ws.metrics_dir / "params.json")
    return params


@flow(name="kb_refresh", log_prints=True)
def kb_refresh(
    root: str = ".",
    sources: list[str] | None = None,
    overrides: list[str] | None = None,
    allow_mass_delete: bool = False,
    rebuild: bool = False,
) -> dict:
    """Refresh the knowledge base: only changed chunks are embedded, vanished documents leave the index, and
    readers see the new index only once it passed verify and the recall gate."""
    started = time.perf_counter()
    ws = Layout(Path(root).resolve())
    params = resolve_params(ws, sources, overrides)
    ingest_documents(ws, params)
    clean_documents(ws, params)
    validate_documents(ws, params)  # a failed gate raises here: nothing below runs, the index is untouched
    chunk_documents(ws, params)
    embed_chunks(ws, params)
    upsert_points(ws, params, allow_mass_delete, rebuild)  # staged: readers still get the serving index
    verify_index(ws, params)
    evaluate_retrieval(ws, params)  # optional gate (retrieve.qa_file): a recall drop fails the run, nothing served
    publish_index(ws, params)  # one atomic switch; the index it replaces is kept for `ragtune rollback`
    report = publish_report(ws, time.perf_counter() - started)

    summary = {
        "points": report["points"]["in_index"],
        "chunks": report["chunks"]["total"],
        "embedded": report["chunks"]["embedded"],
        **{f"docs_{k}": v for k, v in report["documents"].items()},
        **{k: v for k, v in report.get("retrieval", {}).items() if k.startswith(("recall", "mrr"))},
    }
    report["version"] = record_version(ws, params, "kb", report["run_version"], summary)  # tag kb/<run_version>
    return report
