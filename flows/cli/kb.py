"""Knowledge-base commands: refresh the index, search it, measure retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.cli.common import (
    OVERRIDES_ARG,
    PARAMS_OPT,
    QA_OPT,
    SECTION_METRIC_VALUE,
    app,
    friendly_errors,
    out,
    print_table,
    progress_bars,
    project_root,
    run_flow,
)
from flows.runtime import console_progress, console_stage, start_temporary_api
from tasks.core.config import ConfigError, check_versionable, is_url, load_params, load_run_params
from tasks.core.errors import SourceError
from tasks.core.qa import read_qa_set
from tasks.core.workspace import Layout, file_lock
from tasks.kb.edge import migrate_local_mode
from tasks.kb.ingest import check_sources
from tasks.kb.report import report_rows
from tasks.kb.retrieval import RETRIEVAL_MODES, search_queries
from tasks.kb.retrieval_eval import evaluate_modes
from tasks.kb.stages import rollback_index


def print_report(report: dict) -> None:
    print_table(f"kb_refresh {report['run_version']}", SECTION_METRIC_VALUE, report_rows(report))
    for w in report.get("web_problems", []):
        out.print(f"  web page {w['url']}: {w['outcome']} ({w['reason']})", highlight=False)
    for d in report["drops"]:
        out.print(f"  dropped {d['doc_id']}: {d['status']} ({d['reason']})", highlight=False)
    out.print(f"Quality report (GX Data Docs): {report['quality']['data_docs']}", highlight=False)


@app.command()
def refresh(
    overrides: list[str] | None = OVERRIDES_ARG,
    source: list[str] | None = typer.Option(
        None, "--source", help="Source folder, URL-list file or http(s) URL (repeatable); replaces ingest.sources."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
    allow_mass_delete: bool = typer.Option(
        False, "--allow-mass-delete", help="Allow deleting more than index.max_delete_share of the index."
    ),
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Build a new index beside the serving one (vectors from the embedding cache), as a change of "
        "embed.model, chunk or index.distance does on its own.",
    ),
    params: Path = PARAMS_OPT,
) -> None:
    """Run the kb_refresh flow: ingest, clean, GX gate, chunk, embed (changed chunks only), index, verify and the
    recall gate on the new index, then serve it (one atomic switch; the old one is kept for `ragtune rollback`)."""
    with friendly_errors():
        root = project_root(params)

        srcs = [s if is_url(s) else str(Path(s).resolve()) for s in source] if source else None
        p = load_run_params(params, srcs, overrides)  # fail fast on bad params or sources, before Prefect starts
        check_versionable(p, overrides, srcs)
        check_sources(root, p.ingest)
        start_temporary_api()  # comes up while the flow's modules import
        from flows.kb_refresh import kb_refresh

        report = run_flow(
            kb_refresh,
            not json_out,
            preload=("great_expectations",),  # the GX gate's import (~4 s) while the API starts
            root=str(root),
            sources=srcs,
            overrides=list(overrides or []),
            allow_mass_delete=allow_mass_delete,
            rebuild=rebuild,
        )
        if json_out:
            out.print_json(json.dumps(report))
        else:
            print_report(report)


MODE_HELP = "dense | sparse | hybrid (default: retrieve.mode in params.yaml)."


@app.command()
def search(
    text: str | None = typer.Argument(None, help="The query."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Results per query (default: retrieve.top_k)."),
    mode: str | None = typer.Option(None, "--mode", help=MODE_HELP),
    queries_file: Path | None = typer.Option(None, "--queries-file", help="One query per line."),
    overrides: list[str] | None = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list: one {query, hits} per query."),
    params: Path = PARAMS_OPT,
) -> None:
    """Search the index (dense, BM25 sparse, or hybrid RRF) with the options in the retrieve: section."""
    with friendly_errors():
        root = project_root(params)

        queries = [text] if text else []
        if queries_file:
            if not queries_file.is_file():
                raise SourceError(f"--queries-file {queries_file}: no such file.")
            queries += [q.strip() for q in queries_file.read_text(encoding="utf-8").splitlines() if q.strip()]
        if not queries:
            raise ConfigError('give a query (ragtune search "text") or --queries-file FILE.')
        results = search_queries(root, load_params(params, list(overrides or [])), queries, top_k, mode)
        if json_out:
            out.print_json(json.dumps(results))
            return
        for r in results:
            out.print(f"[bold]{r['query']}[/] ({r['mode']})")
            for i, h in enumerate(r["hits"], 1):
                snippet = " ".join(h["text"].split())[:160]
                out.print(f"  {i}. {h['score']:.3f}  {h['doc_id']} #{h['position']}  {snippet}", highlight=False)


@app.command("migrate-index")
def migrate_index(overrides: list[str] | None = OVERRIDES_ARG, params: Path = PARAMS_OPT) -> None:
    """Copy an index written by an earlier ragtune (qdrant-client local mode) into the embedded qdrant-edge store.
    Vectors come from the old store: nothing is re-embedded. The old folder is kept; delete it when satisfied."""
    with friendly_errors():
        root = project_root(params)
        p = load_params(params, list(overrides or [])).index
        busy = f"a refresh is writing collection '{p.collection}'; run migrate-index when it has finished."
        with file_lock(Layout(root).index_lock(p.collection), 0, busy), progress_bars(), console_stage("migrate"):
            done = migrate_local_mode(root, p, console_progress("migrate"))
        out.print(
            f"migrated {done['points']} points ({done['dim']}-dim) from {done['from']} to {done['to']} "
            f"({done['generation']}); the old store was kept.",
            highlight=False,
        )


@app.command()
def rollback(overrides: list[str] | None = OVERRIDES_ARG, params: Path = PARAMS_OPT) -> None:
    """Serve the previous index again (the one the last published refresh replaced); run it twice to undo it.
    The next refresh rebuilds from the sources as they are: fix them first, or it serves the same data again."""
    with friendly_errors():
        root = project_root(params)
        p = load_params(params, list(overrides or []))
        done = rollback_index(Layout(root), p)
        run = done["run_version"] or "unknown"
        out.print(
            f"collection '{p.index.collection}' serves {done['serving']} (run {run}) again; "
            f"{done['previous']} is kept: `ragtune rollback` returns to it.",
            highlight=False,
        )


@app.command("eval-retrieval")
def eval_retrieval(
    qa: Path = QA_OPT,
    mode: list[str] | None = typer.Option(None, "--mode", help=MODE_HELP + " Repeatable; 'all' = the three."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="k of recall@k and MRR@k (retrieve.top_k)."),
    overrides: list[str] | None = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Retrieval quality on a QA set: recall@k, MRR@k and latency p50/p95 per retrieval mode."""
    with friendly_errors():
        root = project_root(params)

        p = load_params(params, list(overrides or []))
        rows = read_qa_set(qa)
        modes = list(RETRIEVAL_MODES) if mode and "all" in mode else (mode or [p.retrieve.mode])
        k = top_k or p.retrieve.top_k
        with progress_bars(not json_out):
            results = evaluate_modes(root, p, rows, modes, k, console_progress)
        if json_out:
            out.print_json(json.dumps(results))
            return
        print_table(
            f"retrieval on {qa} ({len(rows)} questions)",
            ("mode", f"recall@{k}", f"MRR@{k}", "p50 ms", "p95 ms", "missed"),
            [
                {
                    "mode": r["mode"],
                    f"recall@{k}": r[f"recall_at_{k}"],
                    f"MRR@{k}": r[f"mrr_at_{k}"],
                    "p50 ms": r["p50_ms"],
                    "p95 ms": r["p95_ms"],
                    "missed": len(r["missed"]),
                }
                for r in results
            ],
        )
