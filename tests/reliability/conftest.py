"""Reliability suite: real libraries, bounded in time. A refreshed sample workspace is built once per module
and copied per test, so each fault starts from the same indexed state."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.core.config import load_params
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.kb.edge import copy_tree
from tasks.pipeline import run_stage, stage_names

REPO = Path(__file__).resolve().parents[2]


KB = stage_names("kb")


def refresh(root: Path, *overrides: str, stages=KB, allow_mass_delete: bool = False) -> dict:
    params = load_params(root / "params.yaml", list(overrides))
    return {s: run_stage(s, StageContext(Layout(root), params, allow_mass_delete=allow_mass_delete)) for s in stages}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("indexed")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "data/sample/corpus", root / "data/sample/corpus")
    shutil.copytree(REPO / "data/sample/train", root / "data/sample/train")
    refresh(root)
    return root


@pytest.fixture
def project(indexed, tmp_path) -> Path:
    root = tmp_path / "project"
    copy_tree(indexed, root)  # keeps the store's sparse files sparse (a plain copytree writes ~100 MB of zeros)
    shutil.rmtree(root / "data/locks", ignore_errors=True)
    return root
