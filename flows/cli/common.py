"""What every ragtune command shares: the app, the two consoles, common options, errors and progress bars."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.runtime import configure_environment, set_console_progress
from tasks.core.errors import RagtuneError

app = typer.Typer(
    help="ragtune: keep an LLM's knowledge current with a Qdrant index and LoRA adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()  # results: tables, JSON
err = Console(stderr=True)  # progress, messages, errors

PARAMS_OPT = typer.Option(Path("params.yaml"), "--params", help="params.yaml of the project (its folder is the root).")
ADAPTER_OPT = typer.Option(None, "--adapter", help="Adapter version for ft/hybrid (default: production).")
QA_OPT = typer.Option(..., "--qa", help="JSONL: question + answers (strings a relevant chunk holds) and/or doc_ids.")
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
    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bars:

        def factory(label: str):
            tid = bars.add_task(label, total=None)
            return lambda done, total: bars.update(tid, completed=done, total=total or 1)

        set_console_progress(factory)
        try:
            yield
        finally:
            set_console_progress(None)


def project_root(params: Path) -> Path:
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
