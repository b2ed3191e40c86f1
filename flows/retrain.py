"""Prefect flow `retrain`: build_dataset (GX gate) -> train (LoRA, DeepSpeed) -> evaluate -> promote -> report."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.runtime import prefect_progress
from flows.shared import publish_params, publish_quality, record_version, stage_task
from tasks.core.config import Params, check_versionable, load_params
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout, write_json
from tasks.train import stages
from tasks.versioning import check_model_versionable


@stage_task(name="build_dataset", label="build_dataset")
def build_dataset(ws: Layout, params: Params) -> dict:
    try:
        return stages.run_build_dataset(StageContext(ws, params))
    finally:
        publish_quality(ws.train_quality, "train", "training data gate")


@stage_task(name="train_adapter", label="train")
def train_adapter(ws: Layout, params: Params) -> dict:
    metrics = stages.run_train(StageContext(ws, params, prefect_progress("train")))
    if ws.loss_png.exists():
        png = base64.b64encode(ws.loss_png.read_bytes()).decode()
        create_markdown_artifact(
            key="train-loss",
            markdown=f"![loss curve](data:image/png;base64,{png})",
            description="training loss per logged step",
        )
    return metrics


@stage_task(name="evaluate_adapter", label="evaluate")
def evaluate_adapter(ws: Layout, params: Params) -> dict:
    return stages.run_evaluate(StageContext(ws, params))


@stage_task(name="promote_adapter", label="promote")
def promote_adapter(ws: Layout, params: Params) -> dict:
    return stages.run_promote(StageContext(ws, params))


@stage_task(name="publish_report")
def publish_report(ws: Layout, data: dict, train: dict, evaluation: dict, promotion: dict, seconds: float) -> dict:
    report: dict[str, Any] = {
        "data": {
            k: data.get(k)
            for k in ("format", "task", "examples", "train_rows", "eval_rows", "train_tokens", "heldout_questions")
        }
        | {"kb": (data.get("kb") or {}).get("kb_tag")},
        "train": {
            k: train.get(k)
            for k in (
                "global_step",
                "resumed_from_step",
                "first_logged_loss",
                "last_logged_loss",
                "tokens_per_s",
                "peak_rss_mb",
                "peak_gpu_mb",
                "precision",
                "zero_stage",
                "world_size",
                "train_seconds",
            )
        },
        "candidate": {k: v for k, v in evaluation["candidate"].items() if k != "qa_samples"},
        "production": evaluation["production"]
        and {k: v for k, v in evaluation["production"].items() if k != "qa_samples"},
        "promotion": promotion,
        "seconds": round(seconds, 2),
    }
    write_json(ws.metrics_dir / "retrain.json", report)
    rows = [
        {"section": s, "metric": k, "value": v}
        for s in ("data", "train", "candidate")
        for k, v in report[s].items()
        if v is not None
    ]
    create_table_artifact(key="retrain-report", table=rows, description=f"retrain {promotion['version']}")
    verdict = "PROMOTED to production" if promotion["promoted"] else "kept as a version, NOT promoted"
    create_markdown_artifact(
        key="retrain-summary",
        markdown=(
            f"# retrain {promotion['version']}: {verdict}\n\n{promotion['reason']}\n\n"
            f"- production now: `{promotion['production_version']}`\n- metric: `{promotion['metric']}`\n"
            f"- steps: {train['global_step']} (resumed from {train['resumed_from_step']}), "
            f"{train['tokens_per_s']} tokens/s\n- wall: {seconds:.1f} s\n"
        ),
    )
    return report


@flow(name="retrain", log_prints=True)
def retrain(root: str = ".", overrides: list[str] | None = None) -> dict:
    """Retrain the LoRA adapter on the training data; promote it only if it beats production."""
    started = time.perf_counter()
    ws = Layout(Path(root).resolve())
    params = load_params(ws.root / "params.yaml", overrides)
    check_versionable(params, overrides)
    if params.versioning.enabled:
        check_model_versionable(ws)
    publish_params(params)  # the adapter's ragtune.json keeps the config it was trained with
    data = build_dataset(ws, params)  # a failed gate raises here: nothing is trained, production is untouched
    trained = train_adapter(ws, params)
    evaluation = evaluate_adapter(ws, params)
    promotion = promote_adapter(ws, params)
    report = publish_report(ws, data, trained, evaluation, promotion, time.perf_counter() - started)
    summary = {
        "promoted": promotion["promoted"],
        "metric": promotion["metric"],
        "value": promotion["candidate"],
        "production_version": promotion["production_version"],
        "steps": trained["global_step"],
        "tokens_per_s": trained["tokens_per_s"],
        "format": data["format"],
        "kb": (data.get("kb") or {}).get("kb_tag"),
    }  # the knowledge the adapter learned from
    report["version"] = record_version(ws, params, "model", promotion["version"], summary)
    return report
