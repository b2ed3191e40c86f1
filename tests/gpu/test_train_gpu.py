"""GPU path: ZeRO-2 and ZeRO-3 with bf16 on a small Llama-architecture model (skipped without CUDA)."""

from __future__ import annotations

import json

import pytest

from tasks.core.config import load_params
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.lm.tiny import build_tiny_model
from tasks.pipeline import run_stage, stage_names

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_bf16_lora_through_deepspeed_on_gpu(workspace, zero, tmp_path_factory):

    from ..conftest import REPO
    from ..data import INSTRUCTION_OVERRIDES

    model = tmp_path_factory.mktemp("gpu-model") / "llama"
    build_tiny_model(model, "causal", REPO, hidden_size=512, layers=4, vocab_size=2048)
    params = load_params(
        workspace / "params.yaml",
        [
            f"model.base={model}",
            *INSTRUCTION_OVERRIDES,
            f"train.deepspeed=infra/deepspeed/{zero}.json",
            "train.precision=bf16",
            "train.max_steps=30",
            "train.learning_rate=0.001",
        ],
    )
    ws = Layout(workspace)
    results = {name: run_stage(name, StageContext(ws, params)) for name in stage_names("model")}
    t = results["train"]
    assert t["precision"] == "bf16" and t["zero_stage"] == int(zero[-1]) and t["global_step"] == 30
    assert t["peak_gpu_mb"] > 0 and t["verification"]["tensors"] > 0
    assert t["last_logged_loss"] < t["first_logged_loss"]
    assert json.loads((ws.candidate / "ragtune.json").read_text())["train_metrics"]["device"] != "cpu"
