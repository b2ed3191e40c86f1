"""LoRA training throughput: ragtune's train stage vs a bare HF Trainer + PEFT loop, same run, same inputs.

    python benchmarks/train_lora.py                      # CPU: tiny Llama, ZeRO-2
    python benchmarks/train_lora.py --size smollm2 --steps 6 --batch-size 4   # the packaged SmolLM2-135M
    python benchmarks/train_lora.py --size small --zero zero3 --precision bf16   # GPU

Both sides train the same model from the same tokenized rows with the same DeepSpeed config, batch size and
step count, and both are timed over the same window: the whole `trainer.train()` call (DeepSpeed engine init
and the first step's warm-up included on both sides). ragtune's own training-loop tokens/s (from
on_train_begin) is reported beside it. Reported: tokens/s excluding padding, peak memory, and on CUDA the MFU
under two FLOP conventions (see `flops_per_token`). Results: benchmarks/results/train_lora.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tasks.core.config import DEFAULT_LM, Params, load_params
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout, read_json, read_jsonl
from tasks.lm.models import local_model
from tasks.lm.tiny import build_tiny_model
from tasks.train.stages import run_build_dataset, run_train
from tasks.train.trainer import precision, single_process_env

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SIZES = {
    "tiny": dict(hidden_size=64, layers=2, vocab_size=1024),
    "small": dict(hidden_size=1024, layers=8, vocab_size=4096),
    "smollm2": None,
}  # the packaged SmolLM2-135M-Instruct (model.base's default), converted from its GGUF
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense bf16 tensor-core peaks


def flops_per_token(cfg, n_lora: int, seq_len: int) -> dict:
    """Training FLOPs per token. lora: 4N (forward + activation grads of the frozen base) + 6N_A (adapter
    forward, backward, weight grads) + causal attention scores 3 x 2 x L x h x T; fullft_equiv: 6N + same
    attention. N counts matmul weights only (embedding lookup excluded; lm_head included)."""
    h, L, inter, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    n = L * (h * h * 2 + h * kv * 2 + 3 * h * inter) + V * h
    attn = 3 * 2 * L * h * seq_len  # fwd 4*L*h*T non-causal, halved for causal; x3 for fwd+bwd
    return {"lora": 4 * n + 6 * n_lora + attn, "fullft_equiv": 6 * n + attn, "matmul_params": n}


def bare_trainer(model_dir: Path, rows: list[dict], pad_id: int, args_kw: dict, lora_kw: dict) -> dict:
    """What a user would write without ragtune: Trainer + PEFT + DataCollatorForSeq2Seq."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(task_type="CAUSAL_LM", **lora_kw)
    )
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=TrainingArguments(**args_kw), train_dataset=rows, data_collator=collator)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - start
    mean_tokens = sum(len(r["input_ids"]) for r in rows) / len(rows)
    samples = out.metrics["train_samples_per_second"] * out.metrics["train_runtime"]
    res = {
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(samples * mean_tokens / seconds, 1),
        "train_loss": round(out.training_loss, 4),
    }
    if torch.cuda.is_available():
        res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def call_tps(metrics: dict) -> float:
    """ragtune's tokens/s over the whole trainer.train() call: the window the bare side is timed over."""
    return round(metrics["real_tokens"] / metrics["train_call_seconds"], 1)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=SIZES, default="tiny")
    ap.add_argument("--zero", default="zero2", help="zero2 | zero3 | zero3_offload | none")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best is reported")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/train_lora.json")
    return ap.parse_args()


def prepare(a: argparse.Namespace, work: Path) -> tuple[Path, str, Params]:
    """A scratch project with the sample training data, the model of --size, and the run's params."""
    for item in ("params.yaml", "data/sample/train", "infra/deepspeed", "data/sample/corpus"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    if SIZES[a.size] is None:
        model_dir = Path(local_model(DEFAULT_LM, work))
    else:
        model_dir = work / "model"
        build_tiny_model(model_dir, "causal", REPO, **SIZES[a.size])
    ds = "none" if a.zero == "none" else f"infra/deepspeed/{a.zero}.json"
    overrides = [
        f"model.base={model_dir}",
        f"train.deepspeed={ds}",
        f"train.precision={a.precision}",
        "dataset.format=auto",
        "dataset.sources=[data/sample/train/instructions.jsonl]",
        f"train.max_steps={a.steps}",
        f"train.batch_size={a.batch_size}",
        "train.save_steps=100000",
        "train.logging_steps=10",
        "dataset.max_length=256",
    ]
    return model_dir, ds, load_params(work / "params.yaml", overrides)


def run_both(
    a: argparse.Namespace, work: Path, model_dir: Path, ds: str, params: Params, rows: list[dict], pad_id: int
) -> dict[str, list[dict]]:
    """ragtune's train stage and a bare HF Trainer + PEFT on the same rows, alternating which goes first."""
    import torch

    ws = Layout(work)
    prec = precision(params.train)
    args_kw = dict(
        output_dir=str(work / "bare"),
        max_steps=a.steps,
        per_device_train_batch_size=a.batch_size,
        learning_rate=params.train.learning_rate,
        bf16=prec == "bf16",
        fp16=prec == "fp16",
        deepspeed=str(work / ds) if ds != "none" else None,
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=42,
    )
    lora_kw = dict(
        r=params.train.lora.r,
        lora_alpha=params.train.lora.alpha,
        lora_dropout=params.train.lora.dropout,
        target_modules="all-linear",
    )
    runs: dict[str, list[dict]] = {"ragtune": [], "bare": []}

    def ragtune_side() -> None:
        start = time.perf_counter()
        ours = run_train(StageContext(ws, params))
        ours["stage_seconds"] = round(time.perf_counter() - start, 2)
        runs["ragtune"].append(ours)

    def bare_side() -> None:
        if ds != "none":
            single_process_env()
        runs["bare"].append(bare_trainer(model_dir, rows, pad_id, args_kw, lora_kw))

    for i in range(a.repeats):  # the side that goes first pays DeepSpeed's one-time op load: alternate the order
        for side in (ragtune_side, bare_side) if i % 2 == 0 else (bare_side, ragtune_side):
            side()
    return runs


def summarize(a: argparse.Namespace, runs: dict[str, list[dict]], model_dir: Path, rows: list[dict], prec: str) -> dict:
    """The best run of each side, their ratio, and MFU where the GPU's peak is known."""
    import torch
    from transformers import AutoConfig

    ours = max(runs["ragtune"], key=call_tps)
    bare = max(runs["bare"], key=lambda r: r["tokens_per_s"])
    seq = sum(len(r["input_ids"]) for r in rows) / len(rows)
    fl = flops_per_token(AutoConfig.from_pretrained(model_dir), ours["trainable_params"], int(seq))
    result = {
        "benchmark": "train_lora",
        "size": a.size,
        "zero": a.zero,
        "precision": prec,
        "steps": a.steps,
        "batch_size": a.batch_size,
        "mean_seq_tokens": round(seq, 1),
        "device": ours["device"],
        "params_total": ours["total_params"],
        "params_trainable": ours["trainable_params"],
        "ragtune": {
            "tokens_per_s": call_tps(ours),
            "train_call_seconds": ours["train_call_seconds"],
            "loop_tokens_per_s": ours["tokens_per_s"],
            "loop_seconds": ours["train_seconds"],
            "stage_seconds_incl_load_save_verify": round(ours["stage_seconds"], 2),
            "peak_gpu_mb": ours.get("peak_gpu_mb"),
            "peak_rss_mb": ours["peak_rss_mb"],
            "train_loss": ours["train_loss"],
        },
        "bare_trainer_peft": bare,
        "all_runs_tokens_per_s": {
            "ragtune": [call_tps(r) for r in runs["ragtune"]],
            "bare": [r["tokens_per_s"] for r in runs["bare"]],
        },
        "ratio_tokens_per_s": round(call_tps(ours) / bare["tokens_per_s"], 3) if bare["tokens_per_s"] else None,
        "window": "both sides: the whole trainer.train() call",
        "flops_per_token": fl,
    }
    peak = (
        next((v for k, v in PEAK_BF16.items() if k in torch.cuda.get_device_name()), None)
        if torch.cuda.is_available()
        else None
    )
    if peak:
        for side, tps in (("ragtune", call_tps(ours)), ("bare", bare["tokens_per_s"])):
            result[f"mfu_{side}"] = {
                "lora": round(tps * fl["lora"] / peak, 4),
                "fullft_equiv": round(tps * fl["fullft_equiv"] / peak, 4),
                "peak_flops": peak,
                "convention": "causal attention, 4N+6N_A (LoRA)",
            }
    return result


def main() -> None:
    a = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-"))
    model_dir, ds, params = prepare(a, work)
    ws = Layout(work)
    run_build_dataset(StageContext(ws, params))
    meta = read_json(ws.dataset_meta, "build_dataset")
    rows = read_jsonl(ws.train_dir / "train.jsonl", "build_dataset")
    runs = run_both(a, work, model_dir, ds, params, rows, meta["pad_id"])
    result = summarize(a, runs, model_dir, rows, precision(params.train))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
