"""Answering commands: ask one question, compare base / rag / ft / hybrid on a QA set."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.cli.common import (
    ADAPTER_OPT,
    OVERRIDES_ARG,
    PARAMS_OPT,
    QA_OPT,
    SECTION_METRIC_VALUE,
    app,
    err,
    friendly_errors,
    out,
    print_table,
    project_root,
    run_flow,
)
from flows.runtime import start_temporary_api
from tasks.answer.answerer import Answerer
from tasks.answer.compare import check_heldout, comparison_rows
from tasks.answer.profile import profile_rows
from tasks.core.config import load_params, resolve_path
from tasks.core.qa import read_qa_set


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    mode: str = typer.Option("rag", "--mode", help="rag | ft | hybrid | base."),
    adapter: str | None = ADAPTER_OPT,
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Passages in the prompt (generate.passages)."),
    overrides: list[str] | None = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print answer, sources and timings as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Answer a question: retrieve (rag, hybrid), prompt with numbered passages, generate (+ adapter for ft, hybrid)."""
    with friendly_errors():
        root = project_root(params)

        answerer = Answerer(root, load_params(params, list(overrides or [])), adapter)
        try:
            res = answerer.answer(question, mode, top_k)
        finally:
            answerer.close()
        if json_out:
            out.print_json(json.dumps(res))
            return
        if res["answer"] is not None:
            out.print(res["answer"], highlight=False)
        if res["note"]:
            err.print(f"note: {res['note']}", highlight=False)
        for s in res["sources"]:
            snippet = " ".join(s["text"].split())[:160]
            out.print(f"  [{s['n']}] {s['score']:.3f} {s['doc_id']} #{s['position']}  {snippet}", highlight=False)
        t = res["timings_ms"]
        who = f"{res['model']}" + (f" + adapter {res['adapter']}" if res["adapter"] else "") if res["model"] else "none"
        err.print(
            f"{mode}: retrieve {t['retrieve']} ms, generate {t['generate']} ms, total {t['total']} ms; model {who}",
            highlight=False,
        )


@app.command()
def compare(
    qa: Path = QA_OPT,
    adapter: str | None = ADAPTER_OPT,
    overrides: list[str] | None = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Run the compare flow: base vs rag vs ft vs hybrid on your questions, with costs and a recommendation."""
    with friendly_errors():
        root = project_root(params)

        p = load_params(params, list(overrides or []))  # fail fast, before Prefect starts or a model loads
        check_heldout(Answerer(root, p, adapter).adapter_for, p.compare.modes, read_qa_set(qa), str(qa))
        start_temporary_api()  # comes up while the flow's modules import
        from flows.compare import compare as compare_flow

        report = run_flow(
            compare_flow,
            not json_out,
            root=str(root),
            qa_file=str(qa.resolve()),
            overrides=list(overrides or []),
            adapter=adapter,
        )
        if json_out:
            out.print_json(json.dumps(report))
            return

        rows = comparison_rows(report)
        k = f"recall@{report['k']}"
        print_table(
            f"compare on {qa} ({report['questions']} questions)",
            ("mode", "status", "EM", "F1", "contains", k, "p50_ms", "p95_ms"),
            rows,
        )
        print_table(
            "generators",
            ("mode", "generator", "params_m", "weights_mb", "process_peak_mb", "answers/s"),
            [r for r in rows if r["generator"]],
        )
        rec = report["recommendation"]
        out.print(f"Recommendation: {rec['choice'] or 'none'}", highlight=False)
        for line in rec["why"]:
            out.print(f"  - {line}", highlight=False)
        for r in report["modes"]:
            if r["status"] != "ok":
                err.print(f"{r['mode']}: {r['status']}: {r['reason']}", highlight=False)


@app.command()
def profile(
    qa: Path | None = typer.Option(
        None,
        "--qa",
        help="JSONL QA file whose answers are looked for in the knowledge base (default: retrieve.qa_file).",
    ),
    overrides: list[str] | None = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Profile the knowledge base, the training data and a QA file (counts, token lengths, diversity, duplicates,
    languages, boilerplate, answerability) and say what it means for RAG vs fine-tuning."""
    with friendly_errors():
        root = project_root(params)

        p = load_params(params, list(overrides or []))
        qa_file = qa.resolve() if qa else (resolve_path(root, p.retrieve.qa_file) if p.retrieve.qa_file else None)
        if qa_file:
            read_qa_set(qa_file)  # a bad QA file fails here, before Prefect starts
        start_temporary_api()  # comes up while the flow's modules import
        from flows.data_profile import profile as profile_flow

        report = run_flow(
            profile_flow,
            not json_out,
            root=str(root),
            qa_file=str(qa_file) if qa_file else None,
            overrides=list(overrides or []),
        )
        if json_out:
            out.print_json(json.dumps(report))
            return
        print_table("data profile", SECTION_METRIC_VALUE, profile_rows(report))
        out.print("Advice:" if report["advice"] else "Advice: nothing stands out.", highlight=False)
        for line in report["advice"]:
            out.print(f"  - {line}", highlight=False)
