"""DeepSpeed/precision checks before any model loads, and resume points (tasks/train/trainer.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.config import ConfigError, TrainParams, load_params
from tasks.train.trainer import complete_checkpoints, deepspeed_config, precision

REPO = Path(__file__).resolve().parents[3]


def test_training_config_is_checked_before_any_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="train.deepspeed: .*missing.json does not exist"):
        deepspeed_config(tmp_path, TrainParams(deepspeed="missing.json"))
    (tmp_path / "typo.json").write_text(json.dumps({"zero_optimisation": {"stage": 2}}))
    with pytest.raises(ConfigError, match="unknown top-level keys \\['zero_optimisation'\\]"):
        deepspeed_config(tmp_path, TrainParams(deepspeed="typo.json"))
    assert deepspeed_config(REPO, TrainParams(deepspeed="none")) is None
    for name in ("zero2.json", "zero3.json", "zero3_offload.json"):
        assert deepspeed_config(REPO, TrainParams(deepspeed=f"infra/deepspeed/{name}")).is_file()
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            precision(TrainParams(precision="fp16"))
    with pytest.raises(ConfigError, match="train.lora.r"):
        load_params(REPO / "params.yaml", ["train.lora.r=0"])
    with pytest.raises(ConfigError, match="unknown key 'rank'"):
        load_params(REPO / "params.yaml", ["train.lora.rank=8"])


def test_incomplete_checkpoints_are_not_resumed_from(tmp_path):
    for step, files in (
        (10, ["trainer_state.json", "adapter_model.safetensors", "latest"]),
        (20, ["adapter_model.safetensors"]),
    ):  # killed while saving
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        for f in files:
            (d / f).write_text("x")
    assert [d.name for d in complete_checkpoints(tmp_path)] == ["checkpoint-10"]
