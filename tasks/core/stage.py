"""What every pipeline stage receives (one context, one signature) and what it does last (its metrics file)."""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.core.config import Params
from tasks.core.workspace import Layout, write_json

OnProgress = Callable[[int, int], None] | None  # stage code calls back with (done, total)


@dataclass(frozen=True)
class StageContext:
    """Everything a stage run reads besides its files: where (workspace), how (params), who watches (progress)
    and the operator flags index honours (--allow-mass-delete, --rebuild)."""

    ws: Layout
    params: Params
    on_progress: OnProgress = None
    allow_mass_delete: bool = False
    rebuild: bool = False  # build a new index beside the serving one even when its vectors are still valid


def finish_stage(ws: Layout, stage: str, stats: dict, start: float, release: bool = False) -> dict:
    """Stage wall time (imports and model loading included), then the stage's DVC metrics file. `release`: a stage
    that ran a model frees its heap for the next (a full collection costs ~0.4 s once torch and GX are loaded, so
    the light stages skip it: nine of them made 3.6 s of a 1-document refresh)."""
    stats["seconds"] = round(time.perf_counter() - start, 3)
    write_json(ws.stage_metrics(stage), stats)
    if release:
        release_freed_memory()
    return stats


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):  # musl, macOS: nothing to call
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the heap a stage freed back to the OS before the next stage runs in the same process (a refresh runs
    them all in one). glibc otherwise keeps it: after embedding ~220 MB of freed activations stayed resident and the
    index stage's engine memory came on top of them."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


PROJECT = Layout(Path())  # the Layout paths relative to the project root, as dvc.yaml writes them


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, named once: what runs, what it reads and writes, and which params it depends on.

    dvc.yaml repeats these facts for DVC (a test checks that it agrees); the CLI, versioning, the reports,
    compare and the benchmarks read them from here (tasks/pipeline.py)."""

    name: str
    group: str  # "kb" (kb_refresh, kb/* versions) or "model" (retrain, model/*)
    run: Callable[[StageContext], dict]
    params: tuple[str, ...]  # params.yaml sections or keys it reads: dvc.yaml lists exactly these
    deps: tuple[str, ...] = ()  # workspace files it reads (relative to the project root)
    outs: tuple[str, ...] = ()  # what it writes that DVC caches
    git_outs: tuple[str, ...] = ()  # what it writes that git keeps (DVC outs with cache: false)
    metrics: tuple[str, ...] = ()  # small JSON reports besides data/metrics/<name>.json (git-tracked)
    plots: tuple[str, ...] = ()
    source_param: str | None = None  # a params.yaml list of source paths it reads (a dependency too)
    optional: bool = False  # a gate that runs only when configured; reports read it on its own
    always_changed: bool = False  # it checks a live system (the vector store), so DVC always runs it

    @property
    def metrics_files(self) -> tuple[str, ...]:
        return (*self.metrics, rel(PROJECT.stage_metrics(self.name)))


def rel(path: Path) -> str:
    """A PROJECT path as dvc.yaml writes it."""
    return path.as_posix()
