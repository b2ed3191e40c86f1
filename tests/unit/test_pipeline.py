"""The stage registry (tasks/pipeline.py) is the one source of truth; dvc.yaml must say the same thing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tasks.core.config import load_params
from tasks.core.errors import ConfigError
from tasks.pipeline import STAGES, code_deps, get_stage, stage_names
from tasks.versioning import KINDS

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _paths(entries: list) -> set[str]:
    """dvc.yaml lists a path as a string or as a one-key mapping with its options."""
    return {e if isinstance(e, str) else next(iter(e)) for e in entries or []}


def _lookup(dotted: str):
    node = PARAMS
    for key in dotted.split("."):
        node = node[key]
    return node


def test_dvc_yaml_has_exactly_the_registry_stages_in_order():
    assert list(DVC) == list(STAGES)


@pytest.mark.parametrize("name", list(STAGES))
def test_each_dvc_stage_agrees_with_the_registry(name):
    stage, dvc = STAGES[name], DVC[name]
    assert dvc["cmd"].split("#")[0].split() == ["ragtune", "stage", name]
    assert set(dvc["params"]) == set(stage.params)
    sources = set(_lookup(stage.source_param)) if stage.source_param else set()
    assert _paths(dvc["deps"]) == set(stage.deps) | set(code_deps(name)) | sources
    assert _paths(dvc.get("outs")) == set(stage.outs) | set(stage.git_outs)
    assert _paths(dvc.get("metrics")) == set(stage.metrics_files)
    assert _paths(dvc.get("plots")) == set(stage.plots)
    assert bool(dvc.get("always_changed")) == stage.always_changed
    for out in dvc.get("outs") or []:  # what git keeps is exactly what DVC does not cache
        if isinstance(out, dict):
            path, opts = next(iter(out.items()))
            assert (opts.get("cache") is False) == (path in stage.git_outs)


def test_groups_partition_the_stages_and_versions_read_them():
    assert stage_names("kb") + stage_names("model") == tuple(STAGES)
    kb = ("ingest", "clean", "validate", "chunk", "embed", "index", "verify", "publish")
    assert stage_names("kb", optional=False) == kb
    assert KINDS["kb"]["stages"] == list(stage_names("kb")) and KINDS["model"]["stages"] == list(stage_names("model"))
    assert "data/metrics/refresh.json" in KINDS["kb"]["git"] and "models/production.json" in KINDS["model"]["git"]


def test_an_unknown_stage_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown stage 'embedd'. Stages: ingest, clean"):
        get_stage("embedd")


def test_dvc_yaml_params_exist_and_stages_are_known():
    params = load_params(REPO / "params.yaml").as_dict()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == [
        "ingest",
        "clean",
        "validate",
        "chunk",
        "embed",
        "index",
        "verify",
        "eval_retrieval",
        "publish",
        "build_dataset",
        "train",
        "evaluate",
        "promote",
    ]
    for name, stage in stages.items():
        assert stage["cmd"] == f"ragtune stage {name}"
        for key in stage["params"]:
            node = params
            for part in key.split("."):
                assert part in node, f"dvc.yaml stage {name}: params key {key} not in params.yaml"
                node = node[part]


@pytest.mark.parametrize(("flow", "group"), [("kb_refresh", "kb"), ("retrain", "model")])
def test_each_flow_runs_its_groups_stages_in_registry_order(flow, group):
    """The flows read as scripts (one task call per stage), so they name the stages again: in registry order."""
    tree = ast.parse((REPO / f"flows/{flow}.py").read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}

    def stage_run_by(fn: ast.FunctionDef) -> str | None:  # the task function's `stages.run_<name>` call
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "stages":
                return node.attr.removeprefix("run_")
        return None

    calls = sorted(
        (n for n in ast.walk(functions[flow]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)),
        key=lambda n: n.lineno,
    )
    ran = [stage_run_by(functions[c.func.id]) for c in calls if c.func.id in functions]
    assert tuple(s for s in ran if s) == stage_names(group)


def test_code_deps_follow_the_run_function_and_what_it_imports():
    index = set(code_deps("index"))
    assert {"tasks/kb/stages.py", "tasks/kb/index.py", "tasks/kb/store.py", "tasks/kb/sparse.py"} <= index
    assert not {"tasks/kb/chunk.py", "tasks/kb/clean.py"} & index, "only what index's run function uses"
    assert "tasks/kb/embedder.py" in code_deps("chunk"), "chunk measures with the embedding model's tokenizer"
    assert "tasks/train/registry.py" in code_deps("promote") and "tasks/core/config.py" in code_deps("promote")
