"""The stage registry: every pipeline stage, named once (tasks/kb/stages.py and tasks/train/stages.py define
them). The CLI, versioning, the reports, compare, the benchmarks and the dvc.yaml check all read it here."""

from __future__ import annotations

from tasks.core.errors import ConfigError
from tasks.core.stage import Stage, StageContext
from tasks.kb import stages as kb_stages
from tasks.train import stages as train_stages

STAGES: dict[str, Stage] = {s.name: s for s in (*kb_stages.STAGES, *train_stages.STAGES)}
GROUPS = ("kb", "model")


def stage_names(group: str | None = None, optional: bool = True) -> tuple[str, ...]:
    """Stage names in run order, of one group ("kb" or "model") or all; optional=False leaves out the gates that
    run only when configured (eval_retrieval)."""
    return tuple(
        s.name for s in STAGES.values() if (group is None or s.group == group) and (optional or not s.optional)
    )


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}'. Stages: {', '.join(STAGES)}.")
    return STAGES[name]


def run_stage(name: str, ctx: StageContext) -> dict:
    """Run one stage outside Prefect (`ragtune stage NAME`, dvc repro, tests)."""
    return get_stage(name).run(ctx)
