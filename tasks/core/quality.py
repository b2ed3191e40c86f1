"""Great Expectations (GX Core 1.x) plumbing shared by both data gates: run suites over pandas tables in a file
context under data/quality/gx, keep Data Docs there, and return a plain dict whose failures read as one line each."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def get_or_add(getter, adder, name):
    """The named GX object, added if missing. GX 1.x says "missing" with LookupError (a data asset) or its
    subclass KeyError (a batch definition); any other error is real and surfaces."""
    try:
        return getter(name)
    except LookupError:
        return adder(name)


def run_suites(gx_root: Path, suite_name: str, tables: dict[str, tuple[pd.DataFrame, list]], id_column: str) -> dict:
    """Run one checkpoint per table in a file context (gx_root/gx, Data Docs kept there); return a plain dict.

    Failing rows are named by `id_column`, so a message can point at the document or example to fix.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    start = time.perf_counter()
    gx_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    context.variables.progress_bars = {"globally": False}  # the CLI draws the one progress display
    context.variables.save()
    source = context.data_sources.add_or_update_pandas("ragtune")
    results = []
    for table, (frame, exps) in tables.items():
        asset = get_or_add(source.get_asset, source.add_dataframe_asset, table)
        batch = get_or_add(asset.get_batch_definition, asset.add_batch_definition_whole_dataframe, "all")
        suite = gx.ExpectationSuite(name=f"{suite_name}_{table}")
        for e in exps:
            suite.add_expectation(e)
        suite = context.suites.add_or_update(suite)
        vd = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{suite_name}_{table}", data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"{suite_name}_{table}",
                validation_definitions=[vd],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
                result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [id_column]},
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        for run_result in outcome.run_results.values():
            for r in run_result.results:
                cfg = r.expectation_config
                if cfg is None:  # GX fills it for every result of a suite it ran
                    continue
                kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
                res = r.result or {}
                ids = [
                    str(i.get(id_column, next(iter(i.values())))) if isinstance(i, dict) else str(i)
                    for i in (res.get("partial_unexpected_index_list") or [])[:5]
                ]
                results.append(
                    {
                        "table": table,
                        "expectation": cfg.type,
                        "column": kwargs.get("column"),
                        "kwargs": kwargs,
                        "meta": dict(cfg.meta or {}),
                        "success": bool(r.success),
                        "observed": res.get("observed_value"),
                        "unexpected_count": res.get("unexpected_count"),
                        "unexpected_percent": res.get("unexpected_percent"),
                        "unexpected_sample": ids
                        or [str(v)[:60] for v in (res.get("partial_unexpected_list") or [])[:5]],
                    }
                )
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
        return (
            f"{where}: share of '{meta['share']}' {r['table']} is {r['unexpected_percent'] / 100:.2f}, "
            f"above {param}={meta['max_share']}"
        )
    if meta.get("why"):
        sample = f" (e.g. {', '.join(r['unexpected_sample'])})" if r["unexpected_sample"] else ""
        return f"{where}: {meta['why']}{sample}"
    detail = f"observed {r['observed']}" if r["observed"] is not None else f"{r['unexpected_count']} unexpected"
    sample = f" (e.g. {', '.join(r['unexpected_sample'])})" if r["unexpected_sample"] else ""
    args = {k: v for k, v in r["kwargs"].items() if k not in ("column", "meta", "mostly")}
    return f"{where}: {r['expectation']} {args} failed: {detail}{sample}"
