"""The retrain DAG with tiny models on CPU: DeepSpeed ZeRO-2, verification, resume, promotion, seq_cls, gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.retrain import retrain
from tasks.core.config import load_params
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.pipeline import run_stage, stage_names
from tasks.train.stages import run_build_dataset
from tasks.train.trainer import complete_checkpoints
from tests.data import INSTRUCTION_OVERRIDES

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

BIN = str(Path(sys.executable).parent)


def causal(model: Path, *extra: str) -> list[str]:
    """A run that memorizes the 24 sample instructions fast enough for a test."""
    return [
        f"model.base={model}",
        *INSTRUCTION_OVERRIDES,
        "train.epochs=12",
        "train.learning_rate=0.005",
        "train.lora.r=16",
        "train.lora.alpha=32",
        "train.logging_steps=2",
        *extra,
    ]


def test_retrain_zero2_trains_verifies_and_promotes_only_when_better(workspace, tiny_causal):
    ws = Layout(workspace)
    weak = causal(tiny_causal, "train.max_steps=2", "train.learning_rate=0.0001")

    first = retrain(root=str(workspace), overrides=weak)
    assert first["promotion"]["promoted"] and first["promotion"]["reason"] == "no production adapter yet"
    assert first["train"]["zero_stage"] == 2 and first["train"]["global_step"] == 2

    second = retrain(root=str(workspace), overrides=causal(tiny_causal))
    t = json.loads(ws.stage_metrics("train").read_text())
    assert t["last_logged_loss"] < t["first_logged_loss"] - 0.3, "loss must fall on a memorizable dataset"
    assert t["verification"]["tensors"] > 0 and t["verification"]["lora_b_norm"] > 0
    assert t["verification"]["reloaded_eval_loss"] == pytest.approx(t["eval_loss_in_training"], rel=1e-3)
    assert second["promotion"]["promoted"], second["promotion"]["reason"]
    assert second["candidate"]["eval_loss"] < second["production"]["eval_loss"]
    best = second["promotion"]["version"]

    third = retrain(root=str(workspace), overrides=weak)
    assert json.loads(ws.stage_metrics("build_dataset").read_text())["reused_cache"], "same data + tokenizer"
    assert not third["promotion"]["promoted"]
    assert "below promote.min_delta" in third["promotion"]["reason"]
    production = json.loads(ws.production.read_text())
    assert production["version"] == best and production["previous"] == first["promotion"]["version"]
    lineage = [json.loads(line) for line in (ws.models / "lineage.jsonl").read_text().splitlines()]
    assert [e["promoted"] for e in lineage] == [True, True, False]
    assert sorted(p.name for p in (ws.models / "versions").iterdir()) == sorted(e["version"] for e in lineage)
    info = json.loads((ws.models / "versions" / best / "ragtune.json").read_text())
    assert info["base_model"] == str(tiny_causal) and info["libraries"]["deepspeed"]
    assert (
        info["data_version"]
        == {
            "data/sample/train/instructions.jsonl": info["dataset"]["data_version"][
                "data/sample/train/instructions.jsonl"
            ]
        }
        and len(next(iter(info["data_version"].values()))) == 32
    )
    assert ws.loss_csv.read_text().startswith("step,loss,eval_loss") and ws.loss_png.stat().st_size > 1000
    assert not ws.checkpoints.exists(), "a finished run leaves nothing to resume"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    wanted = ["retrain-summary", "retrain-report", "train-loss", "train-progress", "train-quality"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=wanted)))
    assert {a.key for a in found} == set(wanted), "the Prefect UI shows report, loss plot, progress and gate"
    summaries = sorted((a for a in found if a.key == "retrain-summary"), key=lambda a: a.created)
    assert "NOT promoted" in summaries[-1].data and "below promote.min_delta" in summaries[-1].data


def test_killed_training_resumes_from_its_last_checkpoint(workspace, tiny_causal):
    overrides = causal(tiny_causal, "train.max_steps=240", "train.save_steps=10", "train.learning_rate=0.002")
    ws = Layout(workspace)
    run_build_dataset(StageContext(ws, load_params(workspace / "params.yaml", overrides)))
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    cmd = ["ragtune", "--verbose", "stage", "train", *overrides]  # the resume line is an INFO log
    proc = subprocess.Popen(cmd, cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        done = complete_checkpoints(ws.checkpoints) if ws.checkpoints.exists() else []
        if done and int(done[-1].name.split("-")[1]) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted:\n" + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not ws.candidate.exists(), "a killed run must not leave a candidate adapter"
    killed_at = int(complete_checkpoints(ws.checkpoints)[-1].name.split("-")[1])

    rerun = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    t = json.loads(ws.stage_metrics("train").read_text())
    assert t["resumed_from_step"] >= killed_at >= 20
    assert t["global_step"] == 240
    assert f"resuming from {ws.checkpoints}" in rerun.stderr
    state_steps = [int(line.split(",")[0]) for line in ws.loss_csv.read_text().splitlines()[1:]]
    assert state_steps[0] == 1 and state_steps[-1] == 240, "the loss history spans the killed and resumed parts"


def test_seq_cls_trains_a_classifier_and_reports_accuracy(workspace, tiny_cls):
    params = load_params(
        workspace / "params.yaml",
        [
            f"model.base={tiny_cls}",
            "model.task=seq_cls",
            "dataset.format=auto",
            "dataset.sources=[data/sample/train/tickets.jsonl]",
            "dataset.eval_share=0.2",
            "train.epochs=10",
            "train.learning_rate=0.005",
        ],
    )
    ws = Layout(workspace)
    results = {name: run_stage(name, StageContext(ws, params)) for name in stage_names("model")}
    assert results["build_dataset"]["format"] == "labelled"
    assert results["build_dataset"]["label2id"] == {"billing": 0, "connectivity": 1, "installation": 2}
    cand = results["evaluate"]["candidate"]
    # recompute the held-out metrics independently: plain transformers + PEFT on the saved adapter, sklearn scores
    import torch
    from peft import PeftModel
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification

    rows = [json.loads(line) for line in (ws.train_dir / "eval.jsonl").read_text().splitlines()]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_cls, num_labels=3)
    model = PeftModel.from_pretrained(base, ws.candidate / "adapter").eval()
    with torch.no_grad():
        preds = [int(model(input_ids=torch.tensor([r["input_ids"]])).logits.argmax(-1)) for r in rows]
    golds = [r["label"] for r in rows]
    assert cand["eval_rows"] == len(rows) >= 2
    assert cand["accuracy"] == round(accuracy_score(golds, preds), 4)
    assert cand["f1"] == round(f1_score(golds, preds, average="macro"), 4)
    assert results["promote"]["metric"] == "f1" and results["promote"]["promoted"]
    keys = json.loads((ws.candidate / "ragtune.json").read_text())["verification"]["tensors"]
    assert keys > 0


def test_bad_training_file_fails_the_gate_and_trains_nothing(workspace, tiny_causal):
    bad = workspace / "data/bad.jsonl"
    good = {"instruction": "What is HX-7734-Q?", "output": "The Heron Pro sensor kit."}
    rows = (
        [good] * 6
        + [{"instruction": "Missing the answer"}, {"instruction": "", "output": "x"}]
        + [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(4)]
    )
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(
        app,
        [
            "retrain",
            "--params",
            str(workspace / "params.yaml"),
            "--base-model",
            str(tiny_causal),
            "dataset.format=auto",
            "dataset.sources=[data/bad.jsonl]",
        ],
    )
    assert result.exit_code == 5, result.output  # GateFailed
    out = " ".join(result.output.split())
    assert "training data gate failed" in out and "nothing was trained" in out
    assert "bad.jsonl:7" in out and "bad.jsonl:8" in out  # rows named by file:line
    assert "dataset.max_duplicate_share=0.1" in out  # the knob to loosen
    assert "Traceback" not in result.output
    assert not (workspace / "models").exists() and not (workspace / "data/train").exists()

    bad.write_text('{"instruction": "a", "output": "b"}\n{not json\n')
    result = CliRunner().invoke(
        app,
        [
            "stage",
            "build_dataset",
            "--params",
            str(workspace / "params.yaml"),
            f"model.base={tiny_causal}",
            "dataset.format=auto",
            "dataset.sources=[data/bad.jsonl]",
        ],
    )
    assert result.exit_code == 4 and "bad.jsonl:2: not valid JSON" in " ".join(result.output.split())


def test_zero3_with_gradient_checkpointing_saves_a_complete_adapter(workspace, tiny_causal):
    params = load_params(
        workspace / "params.yaml",
        causal(
            tiny_causal,
            "train.deepspeed=infra/deepspeed/zero3.json",
            "train.gradient_checkpointing=true",
            "train.max_steps=8",
        ),
    )
    ws = Layout(workspace)
    run_stage("build_dataset", StageContext(ws, params))
    t = run_stage("train", StageContext(ws, params))
    assert t["zero_stage"] == 3 and t["global_step"] == 8
    assert t["verification"]["parameters"] == t["trainable_params"], "ZeRO-3 must not save empty placeholders"
    assert t["verification"]["reloaded_eval_loss"] == pytest.approx(t["eval_loss_in_training"], rel=1e-3)


def test_packed_rows_train_and_the_reloaded_adapter_matches(workspace, tiny_causal):
    params = load_params(
        workspace / "params.yaml",
        causal(
            tiny_causal, "dataset.packing=true", "dataset.max_length=256", "train.deepspeed=none", "train.max_steps=4"
        ),
    )
    ws = Layout(workspace)
    data = run_stage("build_dataset", StageContext(ws, params))
    assert data["packing"] and data["train_rows"] < data["train_examples"]
    t = run_stage("train", StageContext(ws, params))  # raises if the reloaded adapter's eval loss differs
    assert t["verification"]["reloaded_eval_loss"] == pytest.approx(t["eval_loss_in_training"], rel=1e-3)
    assert t["real_tokens"] > 0 and t["tokens_per_s"] > 0


def test_retrain_source_replaces_the_training_files(workspace, tiny_causal):
    params = [
        "--params",
        str(workspace / "params.yaml"),
        "--base-model",
        str(tiny_causal),
        "dataset.format=auto",
        "dataset.max_length=512",
        "train.deepspeed=none",
        "train.max_steps=2",
        "--json",
    ]
    missing = CliRunner().invoke(app, ["retrain", "--source", str(workspace / "nope.jsonl"), *params])
    assert missing.exit_code == 4 and "--source" in missing.output and "no such file" in missing.output
    chat = workspace / "data/sample/train/chat.jsonl"
    result = CliRunner().invoke(app, ["retrain", "--source", str(chat), *params])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"]["format"] == "chat" and report["data"]["examples"] == 13
