"""LoRA adapters: load base (+ adapter), batch the tokenized rows, evaluate, and verify a saved adapter.

Verification exists because distributed saves fail quietly: under ZeRO-3 other tools have written adapters
whose tensors are empty placeholders. A saved adapter must have the expected keys and shapes, finite non-empty
tensors, a trained (non-zero) lora_B, and give the same eval loss once loaded back onto a fresh base model.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from tasks.core.config import ModelParams
from tasks.core.errors import VerifyError
from tasks.lm.models import load_base
from tasks.train.dataset import IGNORE

ADAPTER_FILE = "adapter_model.safetensors"


class VerifyAdapterError(VerifyError):
    """A saved adapter is empty, incomplete, or does not reproduce the training run's eval loss."""


def load_with_adapter(model: ModelParams, root: Path, adapter_dir: Path, label2id: dict[str, int] | None = None):
    from peft import PeftModel

    base = load_base(model, root, label2id)
    with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6: noise on every load
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)


class Collator:
    """Pads a list of rows to the longest; packed rows keep position_ids and get no attention_mask, so
    transformers builds a block-diagonal mask. Adds `num_real_tokens` (padding excluded) for throughput."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        batch = {
            "input_ids": torch.tensor([r["input_ids"] + [self.pad_id] * (width - len(r["input_ids"])) for r in rows])
        }
        real = sum(len(r["input_ids"]) for r in rows)
        if "position_ids" in rows[0]:
            # padding becomes its own restarting segment, which attends to nothing real
            batch["position_ids"] = torch.tensor(
                [r["position_ids"] + list(range(width - len(r["position_ids"]))) for r in rows]
            )
        else:
            batch["attention_mask"] = torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
            )
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows])
        else:
            batch["labels"] = torch.tensor([r["labels"] + [IGNORE] * (width - len(r["labels"])) for r in rows])
        batch["num_real_tokens"] = torch.tensor(real)
        return batch


def evaluate_rows(model, rows: list[dict], pad_id: int, batch_size: int, task: str) -> dict:
    """Eval loss as HF Trainer computes it (per-batch mean loss, weighted by batch size), perplexity, and for
    seq_cls accuracy and macro F1. No KV cache: with one, transformers skips the packed-sequence mask."""
    import torch

    if not rows:
        return {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    collate = Collator(pad_id)
    total, n, preds, golds = 0.0, 0, [], []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i : i + batch_size])
            batch.pop("num_real_tokens")
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch, use_cache=False) if task != "seq_cls" else model(**batch)
            size = batch["input_ids"].shape[0]
            total += float(out.loss) * size
            n += size
            if task == "seq_cls":
                preds += out.logits.argmax(-1).tolist()
                golds += batch["labels"].tolist()
    loss = total / n
    metrics = {"eval_loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 50)), 4), "eval_rows": n}
    if task == "seq_cls":
        metrics.update(classification_metrics(preds, golds))
    return metrics


def classification_metrics(preds: list[int], golds: list[int]) -> dict:
    """Accuracy and macro F1 over the labels present in gold or predictions."""
    acc = sum(p == g for p, g in zip(preds, golds)) / max(len(golds), 1)
    f1s = []
    for c in sorted(set(golds) | set(preds)):
        tp = sum(p == c and g == c for p, g in zip(preds, golds))
        fp = sum(p == c and g != c for p, g in zip(preds, golds))
        fn = sum(p != c and g == c for p, g in zip(preds, golds))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": round(acc, 4), "f1": round(sum(f1s) / max(len(f1s), 1), 4)}


def expected_state(peft_model) -> dict[str, list[int]]:
    """Adapter keys and full shapes as PEFT will save them; taken before DeepSpeed partitions anything."""
    from peft import get_peft_model_state_dict

    return {k: list(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}


def verify_adapter(adapter_dir: Path, expected: dict[str, list[int]]) -> dict:
    """File-level checks; raises VerifyAdapterError naming the problem."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.is_file() or path.stat().st_size == 0:
        raise VerifyAdapterError(f"{path}: missing or empty; the adapter was not saved.")
    tensors = load_file(str(path))
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise VerifyAdapterError(
            f"{path}: keys differ from the trained model: missing {missing[:5]}, "
            f"unexpected {extra[:5]} ({len(missing)} missing, {len(extra)} unexpected)."
        )
    bad = [k for k, t in tensors.items() if list(t.shape) != expected[k] or t.numel() == 0]
    if bad:
        raise VerifyAdapterError(
            f"{path}: {len(bad)} tensors are empty or have the wrong shape (e.g. {bad[0]}: "
            f"{list(tensors[bad[0]].shape)} != {expected[bad[0]]}). Under ZeRO-3 set "
            "stage3_gather_16bit_weights_on_model_save: true in the DeepSpeed config."
        )
    import torch

    if not all(torch.isfinite(t.float()).all() for t in tensors.values()):
        raise VerifyAdapterError(f"{path}: contains NaN or inf values; training diverged (lower the learning rate).")
    lora_b = [t for k, t in tensors.items() if "lora_B" in k]
    b_norm = float(sum(t.float().norm() ** 2 for t in lora_b) ** 0.5) if lora_b else 0.0
    if lora_b and b_norm == 0.0:
        raise VerifyAdapterError(
            f"{path}: every lora_B weight is zero, so the adapter changes nothing; no optimizer step reached it."
        )
    return {
        "file_bytes": path.stat().st_size,
        "tensors": len(tensors),
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "lora_b_norm": round(b_norm, 6),
    }
