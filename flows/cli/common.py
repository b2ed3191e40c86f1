"""What every ragtune command shares: the app, the two consoles, common options, errors and progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from flows.runtime import (
    configure_environment,
    quiet_prefect_console,
    set_console_display,
    verbosity,
    wait_for_api,
)
from tasks.core.errors import EXIT_INTERRUPTED, RagtuneError

R = TypeVar("R")

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


@app.callback()
def global_options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also show Prefect's INFO logs and the resolved params (RAGTUNE_VERBOSE=1)."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Also DEBUG logs, and the traceback of an expected error (RAGTUNE_DEBUG=1)."
    ),
) -> None:
    """ragtune: keep an LLM's knowledge current with a Qdrant index and LoRA adapters."""
    if verbose:
        os.environ["RAGTUNE_VERBOSE"] = "1"
    if debug:
        os.environ["RAGTUNE_DEBUG"] = "1"


@contextmanager
def friendly_errors() -> Iterator[None]:
    """An expected failure prints one line (what, where, the fix) and exits with its class's code; the traceback
    only with --debug. A bug is not caught here: Python prints its traceback and exits 1."""
    try:
        yield
    except RagtuneError as exc:
        if verbosity() == "debug":
            err.print_exception()
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


class StatusColumn(SpinnerColumn):
    """A spinner while the stage runs, then a check mark, or a cross when it failed."""

    def render(self, task: Task) -> RenderableType:
        state = task.fields.get("state")
        if state == "done":
            return Text("✓", style="green")
        if state == "failed":
            return Text("✗", style="red")
        return super().render(task)


class CountsColumn(ProgressColumn):
    """done/total, items per second and the time left, for a stage that reports counts; blank otherwise."""

    def render(self, task: Task) -> RenderableType:
        if not task.fields.get("counted"):
            return Text("")
        parts = [f"{int(task.completed):,}/{int(task.total or 0):,}"]
        if task.speed:
            parts.append(f"{task.speed:,.1f}/s")
        if not task.finished and task.time_remaining is not None:
            parts.append(f"ETA {int(task.time_remaining) // 60}:{int(task.time_remaining) % 60:02d}")
        return Text("  ".join(parts), style="progress.download")


class StageDisplay:
    """One live display on stderr: a row per stage (status, name, bar, counts/rate/ETA, elapsed)."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.rows: dict[str, TaskID] = {}

    def row(self, label: str) -> Callable[[int, int], None]:
        if label not in self.rows:
            self.rows[label] = self.progress.add_task(label, total=None, state="running", counted=False)
        tid = self.rows[label]

        def update(done: int, total: int) -> None:
            state = "done" if total and done >= total else "running"  # rows no stage wraps end here, too
            self.progress.update(tid, completed=done, total=total, counted=True, state=state)

        return update

    def finish(self, label: str, ok: bool) -> None:
        tid = self.rows[label]
        task = next(t for t in self.progress.tasks if t.id == tid)
        if ok:
            total = task.total if task.fields.get("counted") and task.total is not None else 1  # 0/0 stays 0/0
            self.progress.update(tid, total=total, completed=total, state="done")
        else:
            self.progress.update(tid, state="failed")
        self.progress.stop_task(tid)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """The run's progress display on stderr, when stderr is a terminal (or RAGTUNE_PROGRESS=1)."""
    if not enabled or (not err.is_terminal and os.environ.get("RAGTUNE_PROGRESS") != "1"):
        yield
        return
    with Progress(
        StatusColumn(),
        TextColumn("{task.description:<15}"),
        BarColumn(bar_width=30),
        CountsColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        set_console_display(StageDisplay(progress))
        try:
            yield
        finally:
            set_console_display(None)


def run_flow(flow: Callable[..., R], show_progress: bool, preload: tuple[str, ...] = (), **kwargs: Any) -> R:
    """Run a Prefect flow in this process: one progress display on stderr, stdout kept for the result, and
    Prefect's own failure report left to the UI (the CLI prints the error itself). `preload`: modules its stages
    import, imported while Prefect's temporary API (start_temporary_api) is still starting."""
    wait_for_api(preload)
    quiet_prefect_console()
    with progress_bars(show_progress), redirect_stdout(sys.stderr):
        return flow(**kwargs)


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
