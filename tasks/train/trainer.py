"""train: PEFT LoRA on the tokenized rows with HF Trainer, optionally through DeepSpeed ZeRO.

- Single process (CPU or one GPU) needs no launcher: the rank/world env vars DeepSpeed reads are set here
  when absent. train.processes > 1 (or train.nnodes > 1): the train stage starts torchrun itself
  (tasks/train/launch.py), whose workers run train_lora data-parallel; rank 0 owns the files. An outside
  launcher (`torchrun --nproc_per_node N $(which ragtune) stage train`) works too.
- Checkpoints go to models/checkpoints/run; re-running the same configuration resumes from the newest complete
  checkpoint (adapter, optimizer, scheduler, RNG, step). A finished run removes them.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import socket
import time
from pathlib import Path

from tasks.core.config import ModelParams, TrainParams, resolve_path
from tasks.core.errors import ConfigError
from tasks.core.stage import OnProgress
from tasks.lm.models import load_base
from tasks.train.adapter import Collator, evaluate_rows, expected_state

log = logging.getLogger("ragtune")
# Top-level keys DeepSpeed accepts in a config we ship or expect; DeepSpeed itself ignores typos silently.
DS_KEYS = {
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "bf16",
    "fp16",
    "zero_optimization",
    "optimizer",
    "scheduler",
    "steps_per_print",
    "wall_clock_breakdown",
    "communication_data_type",
    "zero_allow_untested_optimizer",
    "activation_checkpointing",
    "flops_profiler",
    "prescale_gradients",
    "amp",
    "data_types",
}


def deepspeed_config(root: Path, p: TrainParams) -> Path | None:
    """Check the DeepSpeed config before any model loads: file, JSON, known keys, ZeRO stage."""
    if not p.deepspeed or p.deepspeed.lower() == "none":
        return None

    path = resolve_path(root, p.deepspeed)
    if not path.is_file():
        raise ConfigError(
            f"train.deepspeed: {path} does not exist. Use one of infra/deepspeed/*.json, or "
            "train.deepspeed=none to train without DeepSpeed."
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"train.deepspeed: {path} is not valid JSON ({exc}).") from None
    unknown = sorted(set(cfg) - DS_KEYS)
    if unknown:
        raise ConfigError(
            f"train.deepspeed: {path} has unknown top-level keys {unknown}; DeepSpeed would ignore "
            "them silently. Fix the spelling or remove them."
        )
    stage = cfg.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.deepspeed: {path}: zero_optimization.stage must be 0-3 (got {stage}).")
    return path


def zero_stage(ds_path: Path | None) -> int:
    return json.loads(ds_path.read_text())["zero_optimization"].get("stage", 0) if ds_path else 0


def precision(p: TrainParams) -> str:
    import torch

    cuda = torch.cuda.is_available()
    if p.precision == "auto":
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if p.precision == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use auto or fp32 on CPU.")
    return p.precision


def single_process_env() -> None:
    """What the deepspeed launcher would export, for one local process. A launcher's values win; values we set
    are reused while this process's group lives, and replaced in a child process that inherited them."""
    import torch.distributed as dist

    ours = os.environ.get("RAGTUNE_DIST_ENV") == "1"
    if "WORLD_SIZE" in os.environ and not ours:
        return
    if ours and dist.is_available() and dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RAGTUNE_DIST_ENV="1"
    )


def world_size() -> int:
    """Training processes in this run: a launcher's WORLD_SIZE, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def world_sum(value: float, device) -> float:
    """The sum of value over every rank of the process group (value itself when there is no group)."""
    import torch
    import torch.distributed as dist

    if world_size() == 1 or not (dist.is_available() and dist.is_initialized()):
        return value
    total = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item())


def dist_backend() -> str | None:
    """The process group's backend (gloo on CPU, nccl on GPUs), None without a group."""
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


def is_main_process() -> bool:
    """Rank 0 of a launcher (deepspeed/torchrun/accelerate), or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints with everything a resume needs, oldest first; a save cut short by a kill is skipped."""
    found = []
    for d in output_dir.glob("checkpoint-*"):
        if not d.name.split("-")[-1].isdigit():
            continue
        has_optimizer = (d / "latest").is_file() or (d / "optimizer.pt").is_file()
        if (d / "trainer_state.json").is_file() and (d / "adapter_model.safetensors").is_file() and has_optimizer:
            found.append(d)
    return sorted(found, key=lambda d: int(d.name.split("-")[-1]))


def prepare_output_dir(output_dir: Path, run_key: str) -> Path | None:
    """Resume point for this run key; checkpoints of another configuration cannot be resumed and are removed."""
    marker = output_dir / "run.json"
    if output_dir.exists():
        old = json.loads(marker.read_text()).get("run_key") if marker.is_file() else None
        if old != run_key:
            log.info("train: removing checkpoints of a different configuration (%s) in %s", old, output_dir)
            shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_key": run_key}))
    ckpts = complete_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def lora_model(base, model: ModelParams, p: TrainParams):
    from peft import LoraConfig, TaskType, get_peft_model

    target = p.lora.target_modules
    config = LoraConfig(
        r=p.lora.r,
        lora_alpha=p.lora.alpha,
        lora_dropout=p.lora.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        task_type=TaskType.SEQ_CLS if model.task == "seq_cls" else TaskType.CAUSAL_LM,
    )
    try:
        return get_peft_model(base, config)
    except ValueError as exc:
        raise ConfigError(
            f"train.lora.target_modules={target!r}: {exc}. Use all-linear or module names of "
            f"{type(base).__name__} (e.g. q_proj, v_proj)."
        ) from None


def train_lora(
    root: Path,
    rows: dict[str, list[dict]],
    meta: dict,
    model: ModelParams,
    p: TrainParams,
    output_dir: Path,
    run_key: str,
    adapter_dir: Path,
    on_progress: OnProgress = None,
) -> dict:
    """Train, save the adapter to adapter_dir, return metrics (losses, tokens/s, memory, resume point)."""
    import torch

    ds_path = deepspeed_config(root, p)
    prec = precision(p)
    resume = resume_point(output_dir, run_key)
    if ds_path:
        single_process_env()
    torch.manual_seed(p.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec) if ds_path is None else None
    peft_model = lora_model(load_base(model, root, meta.get("label2id"), dtype), model, p)
    expected = expected_state(peft_model)
    # counted before DeepSpeed partitions the parameters (under ZeRO-3 a rank then holds only its shard)
    trainable = sum(v.numel() for v in peft_model.parameters() if v.requires_grad)
    total = sum(v.numel() for v in peft_model.parameters())
    if p.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    loop: dict[str, float] = {"tokens": 0}  # training-loop start/end times and non-pad tokens trained on
    args = training_arguments(p, prec, output_dir, ds_path, has_eval=bool(rows["eval"]) and p.eval_steps > 0)
    trainer = make_trainer(peft_model, args, rows, meta["pad_id"], loop, on_progress)
    resumed_from = int(resume.name.split("-")[-1]) if resume else 0
    if resume:
        log.info("train: resuming from %s (step %d)", resume, resumed_from)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    call_seconds = time.perf_counter() - start
    seconds = loop.get("end", start + call_seconds) - loop.get("start", start)
    world = world_size()
    if rows["eval"] and world > 1:
        # each rank scores the whole split as verification will (distributed eval batches the rows differently)
        final_eval = evaluate_rows(trainer.model, rows["eval"], meta["pad_id"], p.batch_size, model.task)
    else:
        final_eval = trainer.evaluate(rows["eval"]) if rows["eval"] else {}  # a list is a map-style dataset
    loop["tokens"] = world_sum(loop["tokens"], args.device)  # every rank trained on its own share of the rows
    if adapter_dir.exists() and is_main_process():
        shutil.rmtree(adapter_dir)
    trainer.save_model(str(adapter_dir))
    history = [h for h in trainer.state.log_history if "loss" in h or "eval_loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    metrics = {
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from_step": resumed_from,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "train_loss": round(float(result.training_loss), 6),
        "first_logged_loss": round(losses[0], 6) if losses else None,
        "last_logged_loss": round(losses[-1], 6) if losses else None,
        "eval_loss_in_training": round(float(final_eval["eval_loss"]), 6) if final_eval else None,
        "train_seconds": round(seconds, 3),
        "train_call_seconds": round(call_seconds, 3),  # call: + engine init
        "real_tokens": int(loop["tokens"]),
        "tokens_per_s": round(loop["tokens"] / seconds, 1) if seconds else None,
        "trainable_params": trainable,
        "total_params": total,
        "precision": prec,
        "deepspeed": str(p.deepspeed) if ds_path else None,
        "zero_stage": zero_stage(ds_path),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "world_size": world,
        "dist_backend": dist_backend(),
        **peak_memory(),
        "history": history,
    }
    return {"metrics": metrics, "expected_state": expected}


def resume_point(output_dir: Path, run_key: str) -> Path | None:
    """The checkpoint to resume from: rank 0 prepares the folder; other ranks of a launcher only read it."""
    if is_main_process():
        return prepare_output_dir(output_dir, run_key)
    found = complete_checkpoints(output_dir) if output_dir.exists() else []
    return found[-1] if found else None


def training_arguments(p: TrainParams, prec: str, output_dir: Path, ds_path: Path | None, has_eval: bool):
    """The HF TrainingArguments for train: (checkpoints every save_steps, so a killed run resumes)."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=p.epochs,
        max_steps=p.max_steps,
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.grad_accum,
        learning_rate=p.learning_rate,
        lr_scheduler_type=p.lr_scheduler,
        warmup_steps=p.warmup_ratio,
        weight_decay=p.weight_decay,
        max_grad_norm=p.max_grad_norm,
        bf16=prec == "bf16",
        fp16=prec == "fp16",
        activation_checkpointing=p.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if p.gradient_checkpointing else None,
        seed=p.seed,
        data_seed=p.seed,
        save_strategy="steps",
        save_steps=p.save_steps,
        save_total_limit=p.save_total_limit,
        logging_steps=p.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=p.eval_steps or None,
        deepspeed=str(ds_path) if ds_path else None,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        dataloader_num_workers=0,
        save_only_model=False,
        label_names=["labels"],
    )


def make_trainer(peft_model, args, rows: dict[str, list[dict]], pad_id: int, loop: dict[str, float], on_progress):
    """A Trainer that counts the real (non-pad) tokens it trains on into loop["tokens"], times the training loop
    (after DeepSpeed init and checkpoint load) into loop["start"/"end"], and logs through the ragtune logger."""
    from transformers import PrinterCallback, Trainer, TrainerCallback

    class StepReporter(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            loop["start"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            loop["end"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if on_progress:
                on_progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kw):
            shown = {k: round(v, 4) for k, v in (logs or {}).items() if k in ("loss", "eval_loss", "learning_rate")}
            if shown:
                log.info("train: step %d/%d %s", state.global_step, state.max_steps, shown)

    class LoraTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = inputs.pop("num_real_tokens", None)  # counted for throughput; the model must not see it
            if n is not None and model.training:
                loop["tokens"] += int(n)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = LoraTrainer(
        model=peft_model,
        args=args,
        train_dataset=rows["train"],
        eval_dataset=rows["eval"] or None,
        data_collator=Collator(pad_id),
        callbacks=[StepReporter()],
    )
    trainer.remove_callback(PrinterCallback)  # StepReporter logs through the ragtune logger instead
    return trainer


def peak_memory() -> dict:
    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
