"""`dvc repro` in a real git+DVC repo builds the same index as the flow; the CLI's commands are wired."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.kb_refresh import kb_refresh
from tests.data import INSTRUCTIONS
from tests.dvc_repo import GIT_USER, git_dvc_project

from .helpers import stored_points

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

REPO = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_dvc_repro_builds_the_same_index_as_the_flow(workspace, tmp_path_factory):
    other = tmp_path_factory.mktemp("dvc-repo")
    shutil.copytree(workspace, other, dirs_exist_ok=True)
    git_dvc_project(other)
    run(["dvc", "repro", "publish"], other)
    kb_refresh(root=str(workspace))
    via_dvc, via_flow = stored_points(other), stored_points(workspace)
    assert set(via_dvc) == set(via_flow) and len(via_dvc) > 0
    strip = ("run_version",)
    assert all(
        {k: v for k, v in via_dvc[i].items() if k not in strip}
        == {k: v for k, v in via_flow[i].items() if k not in strip}
        for i in via_flow
    )
    status = run(["dvc", "status", "embed"], other)  # everything but the always-reconciled index is up to date
    assert "changed" not in status.stdout
    assert (other / "dvc.lock").exists()


def test_bad_input_is_one_line_not_a_traceback(workspace):
    result = CliRunner().invoke(
        app, ["stage", "ingest", "--params", str(workspace / "params.yaml"), "ingest.sources=[missing-folder]"]
    )
    assert result.exit_code == 4  # SourceError
    assert "source folder 'missing-folder' does not exist" in result.output and "Traceback" not in result.output


def test_refresh_and_search_json_via_cli(workspace):
    runner = CliRunner()
    params = str(workspace / "params.yaml")
    refreshed = runner.invoke(app, ["refresh", "--json", "--params", params])
    assert refreshed.exit_code == 0, refreshed.output
    report = json.loads(refreshed.stdout)
    assert report["points"]["in_index"] == report["chunks"]["total"]
    queries = workspace / "queries.txt"
    queries.write_text("Which model supports dual fuel systems?\nHow long is the warranty?\n")
    found = runner.invoke(app, ["search", "--queries-file", str(queries), "--top-k", "3", "--json", "--params", params])
    assert found.exit_code == 0, found.output
    results = json.loads(found.stdout)
    assert [r["query"] for r in results] == ["Which model supports dual fuel systems?", "How long is the warranty?"]
    assert all(len(r["hits"]) == 3 for r in results)
    assert set(results[0]["hits"][0]) == {"doc_id", "source", "path", "position", "score", "text"}
    assert "HX-7734-Q" in " ".join(h["text"] for h in results[0]["hits"])
    assert any(h["doc_id"] == "product/warranty.txt" for h in results[1]["hits"])


def test_dvc_repro_and_exp_run_train_the_retrain_stages(workspace, tiny_causal, tmp_path_factory):
    repo = tmp_path_factory.mktemp("dvc-retrain")
    shutil.copytree(workspace, repo, dirs_exist_ok=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_causal)
    params["dataset"].update(INSTRUCTIONS)
    params["train"].update(max_steps=6, save_steps=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_dvc_project(repo)
    run(["dvc", "repro", "promote"], repo)
    first = json.loads((repo / "data/metrics/promote.json").read_text())
    assert first["promoted"] and (repo / "models/candidate/adapter/adapter_model.safetensors").is_file()
    run(["git", "add", "-A"], repo)
    run(["git", *GIT_USER, "commit", "-qm", "baseline"], repo)
    run(["dvc", "exp", "run", "-S", "train.lora.r=16", "promote"], repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    text = json.dumps(shown)
    assert '"r": 16' in text and "eval_loss" in text
    lineage = (repo / "models/lineage.jsonl").read_text().splitlines()
    assert len(lineage) == 2, "the experiment's candidate was recorded as a new version"


def test_tiny_model_command_builds_loadable_models_and_refuses_a_used_folder(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["tiny-model", str(tmp_path / "cls"), "--kind", "cls", "--params", str(REPO / "params.yaml")]
    )
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert model.config.num_labels == 3 and AutoTokenizer.from_pretrained(tmp_path / "cls")("hi")["input_ids"]
    again = runner.invoke(app, ["tiny-model", str(tmp_path / "cls"), "--params", str(REPO / "params.yaml")])
    assert again.exit_code == 3 and "not empty" in again.output
