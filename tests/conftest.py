"""Shared fixtures: a throwaway project workspace with the shipped params.yaml and sample corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A project root: params.yaml, dvc.yaml and a copy of the sample corpus under data/sample/corpus."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(REPO / "data/sample/corpus", tmp_path / "data/sample/corpus")
    shutil.copytree(REPO / "data/sample/train", tmp_path / "data/sample/train")
    shutil.copytree(REPO / "infra/deepspeed", tmp_path / "infra/deepspeed")
    return tmp_path


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> Path:
    """A Llama-style model with random weights and a tokenizer trained on the sample data (built once)."""
    from tasks.lm.tiny import build_tiny_model  # imported once the environment above is set

    path = tmp_path_factory.mktemp("models") / "tiny-causal"
    build_tiny_model(path, "causal", REPO)
    return path


@pytest.fixture(scope="session")
def tiny_cls(tmp_path_factory) -> Path:
    from tasks.lm.tiny import build_tiny_model  # imported once the environment above is set

    path = tmp_path_factory.mktemp("models") / "tiny-cls"
    build_tiny_model(path, "cls", REPO, num_labels=3)
    return path


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """A temporary Prefect API server (SQLite) for in-process flow runs, started once per session."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = "ragtune"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
