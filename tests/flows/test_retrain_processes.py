"""train.processes=2 on CPU: the train stage launches torchrun (gloo), rank 0 writes the adapter, and the parent
verifies it and goes on to evaluate and promote as after a one-process run. DeepSpeed ZeRO-2 and plain DDP."""

from __future__ import annotations

import json

import pytest

from flows.retrain import retrain
from tasks.core.config import load_params
from tasks.core.errors import ConfigError
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.pipeline import run_stage
from tasks.train.launch import launch_files
from tests.data import INSTRUCTION_OVERRIDES

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model


def two_processes(model, *extra: str) -> list[str]:
    return [f"model.base={model}", *INSTRUCTION_OVERRIDES, "train.processes=2", "train.logging_steps=1", *extra]


def test_two_zero2_processes_train_a_verified_adapter_that_is_promoted(workspace, tiny_causal):
    ws = Layout(workspace)
    strong = two_processes(tiny_causal, "train.max_steps=6", "train.learning_rate=0.005", "train.lora.r=16")
    progress: list[tuple[int, int]] = []

    first = retrain(root=str(workspace), overrides=strong)
    t = json.loads(ws.stage_metrics("train").read_text())
    assert t["world_size"] == 2 and t["zero_stage"] == 2 and t["global_step"] == 6 and t["dist_backend"] == "gloo"
    assert t["verification"]["tensors"] > 0 and t["verification"]["lora_b_norm"] > 0
    assert t["verification"]["reloaded_eval_loss"] == pytest.approx(t["eval_loss_in_training"], rel=1e-3)
    assert first["train"]["world_size"] == 2, "the run report shows the processes"
    assert first["promotion"]["promoted"] and first["promotion"]["reason"] == "no production adapter yet"
    info = json.loads((ws.candidate / "ragtune.json").read_text())
    assert info["config"]["train"]["processes"] == 2 and info["train_metrics"]["world_size"] == 2
    assert "[rank 1]" in launch_files(ws).log.read_text(), "every worker's output goes to the log"
    assert not ws.checkpoints.exists(), "a finished run leaves nothing to resume"

    weak = two_processes(tiny_causal, "train.max_steps=2", "train.learning_rate=0.0001")
    params = load_params(workspace / "params.yaml", weak)
    run_stage("train", StageContext(ws, params, lambda done, total: progress.append((done, total))))
    assert progress and progress[-1] == (2, 2), "rank 0's steps reach the parent's progress callback"
    run_stage("evaluate", StageContext(ws, params))
    second = run_stage("promote", StageContext(ws, params))
    assert not second["promoted"] and "below promote.min_delta" in second["reason"]
    assert json.loads(ws.production.read_text())["version"] == first["promotion"]["version"]


def test_plain_ddp_trains_and_a_workers_config_error_comes_back_as_one_message(workspace, tiny_causal):
    ws = Layout(workspace)
    overrides = two_processes(tiny_causal, "train.deepspeed=none", "train.max_steps=3")
    run_stage("build_dataset", StageContext(ws, load_params(workspace / "params.yaml", overrides)))

    t = run_stage("train", StageContext(ws, load_params(workspace / "params.yaml", overrides)))
    assert t["world_size"] == 2 and t["deepspeed"] is None and t["global_step"] == 3 and t["dist_backend"] == "gloo"
    assert t["verification"]["tensors"] > 0 and (ws.candidate / "adapter/adapter_model.safetensors").is_file()

    bad = load_params(workspace / "params.yaml", [*overrides, "train.lora.target_modules=[nope_proj]"])
    with pytest.raises(ConfigError, match=r"target_modules.*nope_proj.*rank \d of 2; full output in .*train\.log"):
        run_stage("train", StageContext(ws, bad))
    assert (ws.candidate / "adapter/adapter_model.safetensors").is_file(), "a failed run leaves the candidate"
