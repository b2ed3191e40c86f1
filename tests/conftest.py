"""Shared fixtures: a throwaway project workspace with the shipped params.yaml and sample corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")            # tests never reach a model hub
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A project root: params.yaml, dvc.yaml and a copy of the sample corpus under data/sample/corpus."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(REPO / "data/sample/corpus", tmp_path / "data/sample/corpus")
    return tmp_path
