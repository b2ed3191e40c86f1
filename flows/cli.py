"""The `ragtune` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.runtime import SERVER_FILE, configure_environment, set_console_progress
from tasks.core.errors import RagtuneError

app = typer.Typer(help="ragtune: keep an LLM's knowledge current with a Qdrant index and LoRA adapters.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()                 # results: tables, JSON
err = Console(stderr=True)      # progress, messages, errors

PARAMS_OPT = typer.Option(Path("params.yaml"), "--params", help="params.yaml of the project (its folder is the root).")
SECTION_METRIC_VALUE = ("section", "metric", "value")
OVERRIDES_ARG = typer.Argument(None, help="Overrides as key=value, e.g. chunk.size_tokens=256.", show_default=False)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Expected failures print their message (file/field, reason, fix) and exit 1, without a traceback."""
    try:
        yield
    except RagtuneError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """Rich bars on stderr for long stages; stage code calls back with (done, total)."""
    if not enabled or (not err.is_terminal and os.environ.get("RAGTUNE_PROGRESS") != "1"):
        yield
        return
    with Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as bars:
        def factory(label: str):
            tid = bars.add_task(label, total=None)
            return lambda done, total: bars.update(tid, completed=done, total=total or 1)
        set_console_progress(factory)
        try:
            yield
        finally:
            set_console_progress(None)


def _root(params: Path) -> Path:
    root = params.resolve().parent
    configure_environment(root)
    return root


def print_table(title: str, columns: tuple[str, ...], rows: list[dict]) -> None:
    """A rich table on stdout: one row per dict, cells taken by column name."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    out.print(table)


def print_report(report: dict) -> None:
    from tasks.kb.report import report_rows

    print_table(f"kb_refresh {report['run_version']}", SECTION_METRIC_VALUE, report_rows(report))
    for d in report["drops"]:
        out.print(f"  dropped {d['doc_id']}: {d['status']} ({d['reason']})", highlight=False)
    out.print(f"Quality report (GX Data Docs): {report['quality']['data_docs']}", highlight=False)


@app.command()
def refresh(
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    source: Optional[list[Path]] = typer.Option(None, "--source", help="Source folder (repeatable); replaces ingest.sources."),
    json_out: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
    allow_mass_delete: bool = typer.Option(False, "--allow-mass-delete",
                                           help="Allow deleting more than index.max_delete_share of the index."),
    params: Path = PARAMS_OPT,
) -> None:
    """Run the kb_refresh flow: ingest, clean, GX gate, chunk, embed (changed chunks only), upsert, verify."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import load_run_params

        srcs = [str(s.resolve()) for s in source] if source else None
        load_run_params(params, srcs, overrides)  # fail fast on bad params, before Prefect starts
        from flows.kb_refresh import kb_refresh

        with progress_bars(not json_out), redirect_stdout(sys.stderr):  # stdout is for the report only
            report = kb_refresh(root=str(root), sources=srcs, overrides=list(overrides or []),
                                allow_mass_delete=allow_mass_delete)
        if json_out:
            out.print_json(json.dumps(report))
        else:
            print_report(report)


MODE_HELP = "dense | sparse | hybrid (default: retrieve.mode in params.yaml)."
ADAPTER_OPT = typer.Option(None, "--adapter", help="Adapter version for ft/hybrid (default: production).")
QA_OPT = typer.Option(..., "--qa", help="JSONL: question + answers (strings a relevant chunk holds) and/or doc_ids.")


@app.command()
def search(
    text: Optional[str] = typer.Argument(None, help="The query."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Results per query (default: retrieve.top_k)."),
    mode: Optional[str] = typer.Option(None, "--mode", help=MODE_HELP),
    queries_file: Optional[Path] = typer.Option(None, "--queries-file", help="One query per line."),
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list: one {query, hits} per query."),
    params: Path = PARAMS_OPT,
) -> None:
    """Search the index (dense, BM25 sparse, or hybrid RRF) with the options in the retrieve: section."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import ConfigError, load_params
        from tasks.kb.retrieval import search_queries

        queries = [text] if text else []
        if queries_file:
            if not queries_file.is_file():
                raise ConfigError(f"--queries-file {queries_file}: no such file.")
            queries += [q.strip() for q in queries_file.read_text(encoding="utf-8").splitlines() if q.strip()]
        if not queries:
            raise ConfigError("give a query (ragtune search \"text\") or --queries-file FILE.")
        results = search_queries(root, load_params(params, list(overrides or [])), queries, top_k, mode)
        if json_out:
            out.print_json(json.dumps(results))
            return
        for r in results:
            out.print(f"[bold]{r['query']}[/] ({r['mode']})")
            for i, h in enumerate(r["hits"], 1):
                snippet = " ".join(h["text"].split())[:160]
                out.print(f"  {i}. {h['score']:.3f}  {h['doc_id']} #{h['position']}  {snippet}", highlight=False)


@app.command("eval-retrieval")
def eval_retrieval(
    qa: Path = QA_OPT,
    mode: Optional[list[str]] = typer.Option(None, "--mode", help=MODE_HELP + " Repeatable; 'all' = the three."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="k of recall@k and MRR@k (retrieve.top_k)."),
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Retrieval quality on a QA set: recall@k, MRR@k and latency p50/p95 per retrieval mode."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import load_params
        from tasks.core.qa import read_qa_set
        from tasks.kb.retrieval import MODES
        from tasks.kb.retrieval_eval import evaluate_modes

        p = load_params(params, list(overrides or []))
        rows = read_qa_set(qa)
        modes = list(MODES) if mode and "all" in mode else (mode or [p.retrieve.mode])
        k = top_k or p.retrieve.top_k
        with progress_bars(not json_out):
            from flows.runtime import console_progress

            results = evaluate_modes(root, p, rows, modes, k, console_progress)
        if json_out:
            out.print_json(json.dumps(results))
            return
        print_table(f"retrieval on {qa} ({len(rows)} questions)", ("mode", f"recall@{k}", f"MRR@{k}", "p50 ms",
                                                                     "p95 ms", "missed"),
                    [{"mode": r["mode"], f"recall@{k}": r[f"recall_at_{k}"], f"MRR@{k}": r[f"mrr_at_{k}"],
                      "p50 ms": r["p50_ms"], "p95 ms": r["p95_ms"], "missed": len(r["missed"])} for r in results])


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    mode: str = typer.Option("rag", "--mode", help="rag | ft | hybrid | base."),
    adapter: Optional[str] = ADAPTER_OPT,
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Passages in the prompt (generate.passages)."),
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print answer, sources and timings as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Answer a question: retrieve (rag, hybrid), prompt with numbered passages, generate (+ adapter for ft, hybrid)."""
    with friendly_errors():
        root = _root(params)
        from tasks.answer.answerer import Answerer
        from tasks.core.config import load_params

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
        err.print(f"{mode}: retrieve {t['retrieve']} ms, generate {t['generate']} ms, total {t['total']} ms; "
                  f"model {who}", highlight=False)


@app.command()
def compare(
    qa: Path = QA_OPT,
    adapter: Optional[str] = ADAPTER_OPT,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Run the compare flow: base vs rag vs ft vs hybrid on your questions, with costs and a recommendation."""
    with friendly_errors():
        root = _root(params)
        from tasks.answer.answerer import Answerer
        from tasks.answer.compare import check_heldout
        from tasks.core.config import load_params
        from tasks.core.qa import read_qa_set

        p = load_params(params, list(overrides or []))  # fail fast, before Prefect starts or a model loads
        check_heldout(Answerer(root, p, adapter).adapter_for, p.compare.modes, read_qa_set(qa), str(qa))
        from flows.compare import compare as compare_flow

        with progress_bars(not json_out), redirect_stdout(sys.stderr):
            report = compare_flow(root=str(root), qa_file=str(qa.resolve()), overrides=list(overrides or []),
                                  adapter=adapter)
        if json_out:
            out.print_json(json.dumps(report))
            return
        from tasks.answer.compare import comparison_rows

        rows = comparison_rows(report)
        k = f"recall@{report['k']}"
        print_table(f"compare on {qa} ({report['questions']} questions)",
                    ("mode", "status", "EM", "F1", "contains", k, "p50_ms", "p95_ms"), rows)
        print_table("generators", ("mode", "generator", "params_m", "weights_mb", "process_peak_mb", "answers/s"),
                    [r for r in rows if r["generator"]])
        rec = report["recommendation"]
        out.print(f"Recommendation: {rec['choice'] or 'none'}", highlight=False)
        for line in rec["why"]:
            out.print(f"  - {line}", highlight=False)
        for r in report["modes"]:
            if r["status"] != "ok":
                err.print(f"{r['mode']}: {r['status']}: {r['reason']}", highlight=False)


@app.command()
def retrain(
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    source: Optional[list[Path]] = typer.Option(None, "--source", help="Training JSONL file (repeatable); replaces "
                                                "dataset.sources."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="HF id, local folder or .gguf file; sets "
                                             "model.base."),
    json_out: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
    params: Path = PARAMS_OPT,
) -> None:
    """Run the retrain flow: build_dataset (GX gate), train LoRA (DeepSpeed), evaluate, promote if better."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import ConfigError, load_params

        extra = list(overrides or []) + ([f"model.base={_local_or_id(base_model)}"] if base_model else [])
        if source:
            missing = [str(s) for s in source if not s.is_file()]
            if missing:
                raise ConfigError(f"--source {', '.join(missing)}: no such file. Give JSONL training files "
                                  "(instruction, chat, text, labelled or question/answers rows).")
            extra.append(f"dataset.sources={json.dumps([str(s.resolve()) for s in source])}")
        p = load_params(params, extra)  # fail fast on bad params, before Prefect starts or a model loads
        from tasks.train.trainer import deepspeed_config, precision

        deepspeed_config(root, p.train)
        precision(p.train)
        from tasks.train.examples import read_examples

        read_examples(root, p.dataset.sources, p.dataset.format, p.dataset.system_prompt)  # bad rows: one message
        if p.versioning.enabled:
            from tasks.versioning import check_model_versionable
            from tasks.core.workspace import Layout

            check_model_versionable(Layout(root))
        from flows.retrain import retrain as retrain_flow

        with progress_bars(not json_out), redirect_stdout(sys.stderr):  # DeepSpeed logs to stdout
            report = retrain_flow(root=str(root), overrides=extra)
        if json_out:
            out.print_json(json.dumps(report, default=str))
            return
        print_table(f"retrain {report['promotion']['version']}", SECTION_METRIC_VALUE, [
            {"section": section, "metric": k, "value": v} for section in ("data", "train", "candidate", "production")
            for k, v in (report[section] or {}).items() if v is not None])
        verdict = "promoted" if report["promotion"]["promoted"] else "NOT promoted"
        out.print(f"{report['promotion']['version']} {verdict}: {report['promotion']['reason']}", highlight=False)


def _local_or_id(value: str) -> str:
    """A path that exists is passed absolute (the flow may run elsewhere); anything else is a hub id."""
    return str(Path(value).resolve()) if Path(value).exists() else value


@app.command()
def versions(
    kind: Optional[str] = typer.Option(None, "--kind", help="kb | model (default: both)."),
    json_out: bool = typer.Option(False, "--json", help="Print the versions as a JSON list."),
    params: Path = PARAMS_OPT,
) -> None:
    """List recorded versions (git tags kb/* and model/*), newest first, with their key metrics."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import ConfigError
        from tasks.versioning import KINDS, Repo

        if kind and kind not in KINDS:
            raise ConfigError(f"--kind {kind}: expected one of {', '.join(KINDS)}.")
        found = Repo(root).versions(kind)
        if json_out:
            out.print_json(json.dumps(found))
            return
        print_table(f"versions in {root}", ("version", "at", "metrics"), [
            {"version": v["version"], "at": v.get("at", ""),
             "metrics": " ".join(f"{k}={x}" for k, x in v.get("metrics", {}).items())} for v in found])


@app.command()
def pull(
    version: str = typer.Argument(..., help="A version from `ragtune versions`, e.g. kb/20261121T020000Z."),
    out_dir: Path = typer.Option(Path("pulled"), "--out", help="Folder to write into (same relative paths)."),
    params: Path = PARAMS_OPT,
) -> None:
    """Fetch a version's artifacts (index manifest + metrics, or adapter + metrics) exactly as the run wrote them."""
    with friendly_errors():
        root = _root(params)
        from tasks.versioning import Repo

        for path in Repo(root).pull(version, out_dir):
            out.print(str(path), highlight=False)


@app.command("tiny-model")
def tiny_model(
    path: Path = typer.Argument(..., help="Folder to create (must be new or empty)."),
    kind: str = typer.Option("causal", "--kind", help="causal (Llama-style LM) | cls (BERT-style classifier)."),
    num_labels: int = typer.Option(3, "--num-labels", min=2, help="cls only: size of the classification head."),
    params: Path = PARAMS_OPT,
) -> None:
    """Build a tiny random model + tokenizer from a config (offline stand-in for a real base model)."""
    with friendly_errors():
        root = _root(params)
        from tasks.lm.tiny import build_tiny_model

        info = build_tiny_model(path, kind, root, num_labels=num_labels)
        out.print_json(json.dumps(info))
        err.print(f"Use it: ragtune retrain --base-model {path}"
                  + (" model.task=seq_cls dataset.sources='[data/sample/train/tickets.jsonl]'" if kind == "cls" else ""),
                  highlight=False)


@app.command()
def stage(
    name: str = typer.Argument(..., help="ingest | clean | validate | chunk | embed | index | verify | "
                                         "build_dataset | train | evaluate | promote"),
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    allow_mass_delete: bool = typer.Option(False, "--allow-mass-delete", help="See `ragtune refresh --help`."),
    params: Path = PARAMS_OPT,
) -> None:
    """Run one pipeline stage without Prefect (this is what dvc.yaml calls)."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import ConfigError, load_params
        from tasks.train.stages import RETRAIN_STAGES
        from tasks.kb.stages import KB_STAGES, run_stage
        from tasks.core.workspace import Layout

        if name not in KB_STAGES + RETRAIN_STAGES:
            raise ConfigError(f"unknown stage '{name}'. Stages: {', '.join(KB_STAGES + RETRAIN_STAGES)}.")
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        p = load_params(params, list(overrides or []))
        with progress_bars():
            from flows.runtime import console_progress

            stats = run_stage(name, Layout(root), p, allow_mass_delete, console_progress(name))
        if name == "verify":
            from tasks.kb.report import build_report, report_markdown

            err.print(report_markdown(build_report(Layout(root))), highlight=False)
        else:
            err.print(json.dumps({k: v for k, v in stats.items() if k != "drops"}, default=str), highlight=False)


@app.command()
def watch(
    json_out: bool = typer.Option(False, "--json", help="Print the change report as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Check the training data once; emit `ragtune.data.changed` if it has new examples (triggers retrain)."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import load_params

        load_params(params)
        from flows.watch import watch as watch_flow

        with redirect_stdout(sys.stderr):
            change = watch_flow(root=str(root))
        if json_out:
            out.print_json(json.dumps(change))
        else:
            out.print(f"{'event emitted' if change['emit'] else 'no event'}: {change['reason']}", highlight=False)


@app.command()
def serve(params: Path = PARAMS_OPT) -> None:
    """Register and run the deployments: nightly kb_refresh (cron), watch (interval), retrain (on new data)."""
    with friendly_errors():
        root = _root(params)
        from tasks.core.config import ConfigError, load_params

        p = load_params(params)
        if not os.environ.get("PREFECT_API_URL"):
            raise ConfigError("no Prefect server: start `ragtune server` in another terminal (or export "
                              "PREFECT_API_URL=http://HOST:4200/api); schedules and event triggers need one.")
        from prefect import serve as prefect_serve

        from flows.deployments import build_deployments

        deployments = build_deployments(root, p)
        err.print(f"serving {', '.join(d.name for d in deployments)} for {root} at {os.environ['PREFECT_API_URL']}"
                  " (Ctrl-C pauses the schedules)", highlight=False)
        prefect_serve(*deployments)


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(4200, help="Port for the API and UI."),
    params: Path = PARAMS_OPT,
) -> None:
    """Start the Prefect server and UI (SQLite under .prefect/); later ragtune runs report to it."""
    root = _root(params)
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}/api"
    state = home / SERVER_FILE
    state.write_text(json.dumps({"api_url": url, "pid": os.getpid()}))
    err.print(f"Prefect UI: http://{host}:{port}  (runs from {root} report here; "
              f"elsewhere export PREFECT_API_URL={url})")
    try:
        env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_UI_API_URL": url}  # the UI's browser calls this
        proc = subprocess.run([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                              env=env)
        raise typer.Exit(proc.returncode)
    finally:
        state.unlink(missing_ok=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
