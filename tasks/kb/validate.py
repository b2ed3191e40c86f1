"""Validate: a Great Expectations (GX Core 1.x) gate over the cleaned documents and the ingest outcome."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd

from tasks.core.config import ValidateParams

log = logging.getLogger("ragtune")

SUITE = "ragtune_documents"
# Statuses of an input file in the "inputs" table; the gate bounds the share of each bad one.
STATUSES = ("kept", "empty", "duplicate", "undecodable", "skipped")


def build_tables(kept: list[dict], drops: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(documents: one row per kept document, inputs: one row per ingested document with its status)."""
    documents = pd.DataFrame({
        "doc_id": [d["doc_id"] for d in kept],
        "source": [d["source"] for d in kept],
        "text": [d["text"] for d in kept],
    })
    inputs = pd.DataFrame({
        "doc_id": [d["doc_id"] for d in kept] + [d["doc_id"] for d in drops],
        "status": ["kept"] * len(kept) + [d["status"] for d in drops],
    })
    return documents, inputs


def expectations(params: ValidateParams) -> dict[str, list]:
    """The suite, per table. Share limits become `mostly` on a not-in-set expectation."""
    import great_expectations.expectations as gxe

    def share_cap(status: str, cap: float):
        return gxe.ExpectColumnValuesToNotBeInSet(column="status", value_set=[status], mostly=round(1 - cap, 6),
                                                  meta={"share": status, "max_share": cap})

    return {
        "documents": [
            gxe.ExpectTableRowCountToBeBetween(min_value=params.min_documents),
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=params.min_chars,
                                                    max_value=params.max_chars),
            gxe.ExpectColumnValuesToNotBeNull(column="doc_id"),
            gxe.ExpectColumnValuesToBeUnique(column="doc_id"),
        ],
        "inputs": [
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)),
            share_cap("empty", params.max_empty_share),
            share_cap("duplicate", params.max_duplicate_share),
            share_cap("undecodable", params.max_undecodable_share),
        ],
    }


def _get_or_add(getter, adder, name):
    try:
        return getter(name)
    except Exception:  # GX's "not found" error types differ across 1.x releases
        return adder(name)


def run_gate(documents: pd.DataFrame, inputs: pd.DataFrame, params: ValidateParams, gx_root: Path) -> dict:
    """The documents gate of kb_refresh: suites over the kept documents and the ingest outcome."""
    exps = expectations(params)
    report = run_suites(gx_root, SUITE, {"documents": (documents, exps["documents"]),
                                         "inputs": (inputs, exps["inputs"])}, id_column="doc_id")
    counts = inputs["status"].value_counts().to_dict() if len(inputs) else {}
    n = max(len(inputs), 1)
    report.update(documents=int(len(documents)), inputs=int(len(inputs)),
                  shares={s: round(counts.get(s, 0) / n, 4) for s in STATUSES})
    return report


def run_suites(gx_root: Path, suite_name: str, tables: dict[str, tuple[pd.DataFrame, list]], id_column: str) -> dict:
    """Run one checkpoint per table in a file context (gx_root/gx, Data Docs kept there); return a plain dict.

    Failing rows are named by `id_column`, so a message can point at the document or example to fix.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    start = time.perf_counter()
    gx_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    try:
        context.variables.progress_bars = {"globally": False}
        context.variables.save()
    except Exception:  # progress bar config differs across 1.x releases; only cosmetics
        pass
    source = context.data_sources.add_or_update_pandas("ragtune")
    results = []
    for table, (frame, exps) in tables.items():
        asset = _get_or_add(source.get_asset, source.add_dataframe_asset, table)
        batch = _get_or_add(asset.get_batch_definition, asset.add_batch_definition_whole_dataframe, "all")
        suite = gx.ExpectationSuite(name=f"{suite_name}_{table}")
        for e in exps:
            suite.add_expectation(e)
        suite = context.suites.add_or_update(suite)
        vd = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{suite_name}_{table}", data=batch, suite=suite))
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=f"{suite_name}_{table}", validation_definitions=[vd],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [id_column]},
        ))
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        for run_result in outcome.run_results.values():
            for r in run_result.results:
                cfg = r.expectation_config
                kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
                res = r.result or {}
                ids = [str(i.get(id_column, next(iter(i.values())))) if isinstance(i, dict) else str(i)
                       for i in (res.get("partial_unexpected_index_list") or [])[:5]]
                results.append({
                    "table": table, "expectation": cfg.type, "column": kwargs.get("column"),
                    "kwargs": kwargs, "meta": dict(cfg.meta or {}), "success": bool(r.success),
                    "observed": res.get("observed_value"),
                    "unexpected_count": res.get("unexpected_count"),
                    "unexpected_percent": res.get("unexpected_percent"),
                    "unexpected_sample": ids or [str(v)[:60] for v in (res.get("partial_unexpected_list") or [])[:5]],
                })
    docs_index = gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return {
        "success": all(r["success"] for r in results),
        "failed": [describe(r) for r in results if not r["success"]],
        "expectations": results,
        "evaluated": len(results),
        "data_docs": str(docs_index),
        "seconds": round(time.perf_counter() - start, 3),
    }


def describe(r: dict) -> str:
    """One line a person can act on, e.g. `inputs.status: share 'empty' 0.35 > 0.2`."""
    where = f"{r['table']}.{r['column']}" if r["column"] else r["table"]
    meta = r.get("meta") or {}
    if "share" in meta and r.get("unexpected_percent") is not None:
        param = meta.get("param", f"validate.max_{meta['share']}_share")
        return (f"{where}: share of '{meta['share']}' {r['table']} is {r['unexpected_percent'] / 100:.2f}, "
                f"above {param}={meta['max_share']}")
    if meta.get("why"):
        sample = f" (e.g. {', '.join(r['unexpected_sample'])})" if r["unexpected_sample"] else ""
        return f"{where}: {meta['why']}{sample}"
    detail = f"observed {r['observed']}" if r["observed"] is not None else f"{r['unexpected_count']} unexpected"
    sample = f" (e.g. {', '.join(r['unexpected_sample'])})" if r["unexpected_sample"] else ""
    args = {k: v for k, v in r["kwargs"].items() if k not in ("column", "meta", "mostly")}
    return f"{where}: {r['expectation']} {args} failed: {detail}{sample}"
