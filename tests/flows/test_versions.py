"""Versions: every successful run is committed, tagged and pushed; `ragtune pull` returns it bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.kb_refresh import kb_refresh
from flows.retrain import retrain
from tasks.core.config import ConfigError, check_versionable, load_params
from tests.data import INSTRUCTIONS, set_params
from tests.dvc_repo import git_dvc_project
from tests.flows.helpers import stored_points

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

REPO = Path(__file__).resolve().parents[2]


def versioned_project(workspace: Path, remote: Path) -> Path:
    set_params(workspace / "params.yaml", versioning__enabled=True)
    return git_dvc_project(workspace, remote, commit=True)


def test_refresh_versions_round_trip_bit_for_bit(workspace, tmp_path_factory):
    remote = tmp_path_factory.mktemp("dvc-remote")
    root = versioned_project(workspace, remote)
    params = str(root / "params.yaml")
    first = kb_refresh(root=str(root))
    v1 = first["version"]["version"]
    assert v1 == f"kb/{first['run_version']}" and first["version"]["pushed"], "one id: the tag names the index run"
    assert {p["run_version"] for p in stored_points(root).values()} == {first["run_version"]}
    original = {p: (root / p).read_bytes() for p in ("data/index/manifest.json", "data/metrics/refresh.json")}

    (root / "data/sample/corpus/product/warranty.txt").write_text("Heron carries a ten-year warranty now.\n")
    second = kb_refresh(root=str(root))
    v2 = second["version"]["version"]
    assert v2 != v1 and second["documents"]["changed"] == 1

    listed = CliRunner().invoke(app, ["versions", "--kind", "kb", "--json", "--params", params])
    assert listed.exit_code == 0, listed.output
    versions = json.loads(listed.stdout)
    assert [v["version"] for v in versions] == [v2, v1]
    assert versions[1]["metrics"]["points"] == first["points"]["in_index"]

    shutil.rmtree(root / ".dvc/cache")  # the pull must come from the DVC remote, not the local cache
    out = root.parent / "pulled"
    pulled = CliRunner().invoke(app, ["pull", v1, "--out", str(out), "--params", params])
    assert pulled.exit_code == 0, pulled.output
    for rel, data in original.items():
        assert (out / rel).read_bytes() == data, rel
    assert (root / "data/index/manifest.json").read_bytes() != original["data/index/manifest.json"]

    again = CliRunner().invoke(app, ["pull", "kb/no-such", "--out", str(out / "x"), "--params", params])
    assert again.exit_code == 8 and "no version 'kb/no-such'" in again.output


def test_versioning_refuses_overrides_that_params_yaml_does_not_record(workspace):

    params = load_params(workspace / "params.yaml", ["versioning.enabled=true", "chunk.size_tokens=128"])
    with pytest.raises(ConfigError, match="versioning.enabled: this run has overrides"):
        check_versionable(params, ["versioning.enabled=true", "chunk.size_tokens=128"])
    check_versionable(params, ["versioning.enabled=true"])


def test_retrain_is_a_model_version_and_its_adapter_pulls_back_identical(workspace, tiny_causal, tmp_path_factory):
    import yaml

    root = versioned_project(workspace, tmp_path_factory.mktemp("dvc-remote"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_causal)
    params["dataset"].update(INSTRUCTIONS)
    params["train"].update(max_steps=4, save_steps=100)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = CliRunner().invoke(app, ["retrain", "--params", str(root / "params.yaml")])
    assert refused.exit_code == 8 and "Run `ragtune refresh` once first" in refused.output
    assert not (root / "models/candidate").exists(), "nothing is trained when the version could not be recorded"
    kb_refresh(root=str(root))  # build_dataset's knowledge-base deps exist from here on
    report = retrain(root=str(root))
    version = report["version"]["version"]
    assert version == f"model/{report['promotion']['version']}" and report["version"]["pushed"]
    adapter = "models/candidate/adapter/adapter_model.safetensors"
    original = (root / adapter).read_bytes()
    listed = json.loads(
        CliRunner().invoke(app, ["versions", "--kind", "model", "--json", "--params", str(root / "params.yaml")]).stdout
    )
    assert listed[0]["version"] == version and listed[0]["metrics"]["promoted"] is True
    shutil.rmtree(root / ".dvc/cache")
    out = root.parent / "pulled-model"
    result = CliRunner().invoke(app, ["pull", version, "--out", str(out), "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert (out / adapter).read_bytes() == original
    assert json.loads((out / "data/metrics/promote.json").read_text())["version"] == report["promotion"]["version"]
