"""The stage registry: every pipeline stage, named once (tasks/kb/stages.py and tasks/train/stages.py define
them). The CLI, versioning, the reports, compare, the benchmarks and the dvc.yaml check all read it here."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tasks.core.errors import ConfigError
from tasks.core.stage import Stage, StageContext
from tasks.kb import stages as kb_stages
from tasks.train import stages as train_stages

STAGES: dict[str, Stage] = {s.name: s for s in (*kb_stages.STAGES, *train_stages.STAGES)}
GROUPS = ("kb", "model")
ROOT = Path(__file__).resolve().parent.parent  # the folder holding tasks/


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


def code_deps(name: str) -> tuple[str, ...]:
    """The source files whose change must re-run a stage under `dvc repro`, derived from the imports.

    They are the module of the stage's run function, the ragtune modules that function (and the helpers of its
    module it calls) refers to, and whatever those import in turn. dvc.yaml lists exactly these as code deps
    (tests/unit/test_pipeline.py), so a list typed by hand cannot fall behind the code."""
    run = get_stage(name).run
    tree = _parse(run.__module__)
    imported = _own_imports(tree)
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    used: set[str] = set()
    todo, seen = [run.__name__], set()
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        for node in ast.walk(helpers[fn]):
            if isinstance(node, ast.Name):
                used.add(node.id)
                if node.id in helpers:
                    todo.append(node.id)
    modules = {run.__module__}
    todo = [imported[n] for n in used if n in imported]
    while todo:
        module = todo.pop()
        if module not in modules:
            modules.add(module)
            todo += _own_imports(_parse(module)).values()
    return tuple(sorted(_file(m).relative_to(ROOT).as_posix() for m in modules))


def _file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def _parse(module: str) -> ast.Module:
    return ast.parse(_file(module).read_text(encoding="utf-8"))


def _own_imports(tree: ast.Module) -> dict[str, str]:
    """Each name a module binds by importing one of ragtune's own modules -> the module it comes from."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("tasks.")})
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tasks"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"  # `from tasks.kb import stages` imports the module tasks.kb.stages
                is_module = ROOT.joinpath(*sub.split(".")).with_suffix(".py").is_file()
                bound[a.asname or a.name] = sub if is_module else str(node.module)
    return bound
