"""The retrain stages: build_dataset -> train -> evaluate -> promote (what dvc.yaml and the `retrain` flow run).

Each reads its inputs from the workspace and writes its outputs atomically: a failed or killed stage leaves
the previous candidate, production pointer and versions as they were.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from tasks.core.config import DatasetParams, Params, resolve_path
from tasks.core.errors import ConfigError, GateFailed, RagtuneError
from tasks.core.qa import read_qa
from tasks.core.quality import run_suites
from tasks.core.stage import PROJECT, Stage, StageContext, finish_stage, rel
from tasks.core.workspace import Layout, read_json, read_jsonl, write_json, write_jsonl
from tasks.lm.generate import score_qa
from tasks.lm.models import load_lm_tokenizer
from tasks.lm.templates import chat_template
from tasks.train import dataset as D
from tasks.train.adapter import VerifyAdapterError, evaluate_rows, load_with_adapter, verify_adapter
from tasks.train.examples import QA_FORMATS, Example, data_version, encoding, read_examples, version_files
from tasks.train.kb_dataset import kb_version, raft_from_index
from tasks.train.launch import needs_launcher, train_launched
from tasks.train.registry import ModelRegistry, decide, new_version, primary_metric
from tasks.train.trainer import deepspeed_config, is_main_process, prepare_output_dir, train_lora

log = logging.getLogger("ragtune")


def run_build_dataset(ctx: StageContext) -> dict:
    """Read + repair examples (or build them from the knowledge base), tokenize (cached), run the GX gate,
    split, pack, write data/train/."""
    start = time.perf_counter()
    ws, params = ctx.ws, ctx.params
    p, task = params.dataset, params.model.task
    examples, fmt = read_examples(ws.root, p.sources, p.format, p.system_prompt)
    if (task == "seq_cls") != (fmt == "labelled"):
        raise ConfigError(
            f"model.task={task} does not fit dataset format '{fmt}': seq_cls trains on labelled "
            "{text, label} examples, causal_lm on instruction, chat, text, kb_text, qa or raft examples."
        )
    source_hashes = sorted({e.content_hash[:16] for e in examples if not e.problem})  # what `watch` diffs against
    raft = None
    if fmt == "raft":
        examples, raft = raft_from_index(ws, params, examples, ctx.on_progress)
    kind = encoding(fmt)
    tokenizer = load_lm_tokenizer(params.model, ws.root)
    template = chat_template(tokenizer, p.fallback_template) if kind in ("instruction", "chat") else ""
    labels = list(p.labels) or sorted({e.label for e in examples if e.label})
    label2id = {lab: i for i, lab in enumerate(labels)} if fmt == "labelled" else {}
    key = D.cache_key(examples, D.tokenizer_fingerprint(tokenizer), template, fmt, p, task)
    encoded, reused = encode_cached(ws, key, examples, tokenizer, kind, template, label2id)
    report = gate_examples(ws, p, examples, encoded, kind, fmt)
    train, evals = D.split(encoded, p)
    rows = {
        name: D.to_rows(items, kind, p.max_length, p.packing and fmt != "labelled")
        for name, items in (("train", train), ("eval", evals))
    }
    check_rows(rows, kind, tokenizer, p.max_length)
    for name, r in rows.items():
        write_jsonl(ws.train_dir / f"{name}.jsonl", r)
    meta = {
        "format": fmt,
        "encoding": kind,
        "task": task,
        "cache_key": key,
        "base_model": params.model.base,
        "template": template,
        "label2id": label2id,
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "data_version": data_version(ws.root, version_files(ws.root, fmt, p.sources)),
        "kb": kb_version(ws) if fmt in ("kb_text", "raft") else None,
        "raft": raft,
        **write_heldout_qa(ws, fmt, examples, train, evals),
        "examples": len(examples),
        **split_counts(train, evals, rows, fmt),
        "packing": p.packing and fmt != "labelled",
        "reused_cache": reused,
        "example_hashes": source_hashes,
    }
    write_json(ws.dataset_meta, meta)
    stats = {k: v for k, v in meta.items() if k not in ("template", "example_hashes", "train_questions")}
    stats["gate"] = {"evaluated": report["evaluated"], "success": True, "data_docs": report["data_docs"]}
    finish_stage(ws, "build_dataset", stats, start, release=True)
    log.info(
        "build_dataset: %s format, %d train / %d eval rows, %d train tokens",
        fmt,
        meta["train_rows"],
        meta["eval_rows"],
        meta["train_tokens"],
    )
    return stats


def split_counts(train: list[D.Encoded], evals: list[D.Encoded], rows: dict[str, list[dict]], fmt: str) -> dict:
    """Examples and rows on each side of the split, and the tokens trained on (labelled rows have no token labels)."""
    return {
        "unique_examples": len(train) + len(evals),
        "train_examples": len(train),
        "eval_examples": len(evals),
        "train_rows": len(rows["train"]),
        "eval_rows": len(rows["eval"]),
        "train_tokens": sum(len(r["input_ids"]) for r in rows["train"]),
        "trained_tokens": sum(sum(t != D.IGNORE for t in r["labels"]) for r in rows["train"])
        if fmt != "labelled"
        else None,
    }


def encode_cached(
    ws: Layout, key: str, examples: list[Example], tokenizer, kind: str, template: str, label2id: dict[str, int]
) -> tuple[list[D.Encoded], bool]:
    """Token ids for the examples, from data/cache/tokenized/<key> when an identical encoding was made before."""
    cached_file = ws.tokenized_cache / key / "encoded.jsonl"
    encoded = D.load_cached(cached_file)
    if encoded is not None:
        return encoded, True
    encoded = D.encode(examples, tokenizer, kind, template, label2id)
    write_jsonl(cached_file, (asdict(e) for e in encoded))
    return encoded, False


def gate_examples(
    ws: Layout, p: DatasetParams, examples: list[Example], encoded: list[D.Encoded], kind: str, fmt: str
) -> dict:
    """The training-data GX gate; its report is written whether it passes or not, and a failure stops here."""
    report = run_suites(
        ws.gx_root,
        "ragtune_examples",
        {"examples": (D.gate_table(examples, encoded, p.max_length), D.expectations(p, kind, fmt))},
        id_column="example_id",
    )
    report.update(format=fmt, examples=len(examples), sources=p.sources)
    write_json(ws.train_quality, report)
    if not report["success"]:
        raise GateFailed(
            f"training data gate failed ({len(report['failed'])} of {report['evaluated']} expectations); nothing "
            "was trained:\n  - " + "\n  - ".join(report["failed"]) + f"\nReport: {ws.train_quality}\n"
            f"Data Docs: {report['data_docs']}\n"
            f"Fix the examples in {', '.join(version_files(ws.root, fmt, p.sources))}, "
            "or loosen the thresholds in the dataset: section of params.yaml."
        )
    return report


def check_rows(rows: dict[str, list[dict]], kind: str, tokenizer, max_length: int) -> None:
    """Refuse rows a model cannot learn from: none left, or chat rows that never teach the stop token."""
    if kind in ("instruction", "chat") and not any(tokenizer.eos_token_id in r["labels"] for r in rows["train"]):
        raise GateFailed(
            f"no trained span contains the tokenizer's eos token {tokenizer.eos_token!r}, so the model would "
            "never learn to stop. Use a template whose turns end with eos (dataset.fallback_template=chatml for "
            "<|im_end|> tokenizers, or plain), or a tokenizer whose eos_token matches its chat template."
        )
    if not rows["train"]:
        raise GateFailed(f"dataset: no training rows left after truncation to dataset.max_length={max_length}.")


def write_heldout_qa(
    ws: Layout, fmt: str, examples: list[Example], train: list[D.Encoded], evals: list[D.Encoded]
) -> dict:
    """For QA formats, the questions held out of training (for `compare` and evaluate.qa_file)."""
    if fmt not in QA_FORMATS:
        ws.heldout_qa.unlink(missing_ok=True)
        return {}
    qa_by_key = {e.split_key: e.qa for e in examples if not e.problem and e.qa}
    held = [qa_by_key[key] for key in dict.fromkeys(e.split_key for e in evals)]
    write_jsonl(ws.heldout_qa, held)
    return {
        "train_questions": sorted({e.split_key for e in train}),
        "heldout_questions": len(held),
        "heldout_qa": str(ws.heldout_qa.relative_to(ws.root)),
    }


def run_key(params: Params, meta: dict, ds_text: str) -> str:
    body = json.dumps(
        {
            "data": meta["cache_key"],
            "model": params.model.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
            "deepspeed": ds_text,
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "deepspeed", "accelerate", "ragtune"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_train(ctx: StageContext) -> dict:
    """Train the candidate adapter (resuming an interrupted run), verify it, write it to models/candidate."""
    start = time.perf_counter()
    ws, params = ctx.ws, ctx.params
    meta = read_json(ws.dataset_meta, "build_dataset")
    if meta["task"] != params.model.task or meta["base_model"] != params.model.base:
        raise RagtuneError(
            f"{ws.dataset_meta} was built for {meta['base_model']} ({meta['task']}), not "
            f"{params.model.base} ({params.model.task}); run build_dataset again."
        )
    rows = {n: read_jsonl(ws.train_dir / f"{n}.jsonl", "build_dataset") for n in ("train", "eval")}
    ds_path = deepspeed_config(ws.root, params.train)
    key = run_key(params, meta, ds_path.read_text() if ds_path else "")
    staging = ws.models / ".candidate.tmp"
    if is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
    if needs_launcher(params.train):
        prepare_output_dir(ws.checkpoints, key)  # here, so no worker resumes from what another one removes
        launched = train_launched(ws, params, ws.checkpoints, key, staging / "adapter", ctx.on_progress)
        if launched is None:  # several nodes: the node that ran rank 0 verifies and publishes the adapter
            log.info("train: rank 0 ran on another node; that node verifies and publishes the adapter")
            return {"rank0_elsewhere": True}
        result = launched
    else:
        result = train_lora(
            ws.root, rows, meta, params.model, params.train, ws.checkpoints, key, staging / "adapter", ctx.on_progress
        )
    m = result["metrics"]
    if not is_main_process():  # under an outside launcher, rank 0 verifies and publishes the adapter
        return m
    load_lm_tokenizer(params.model, ws.root).save_pretrained(staging / "adapter")
    verification = verify_candidate(ws, params, staging / "adapter", result["expected_state"], rows["eval"], meta, m)
    history = m.pop("history")
    write_loss_plot(ws, history)
    write_json(
        staging / "ragtune.json",
        {
            "run_key": key,
            "base_model": params.model.base,
            "revision": params.model.revision,
            "task": params.model.task,
            "config": {"model": params.model.model_dump(mode="json"), "train": params.train.model_dump(mode="json")},
            "dataset": {k: v for k, v in meta.items() if k != "template"},
            "deepspeed_config": json.loads(ds_path.read_text()) if ds_path else None,
            "data_version": meta["data_version"],
            "dataset_key": meta["cache_key"],
            "label2id": meta["label2id"],
            "libraries": library_versions(),
            "train_metrics": m,
            "verification": verification,
        },
    )
    shutil.rmtree(ws.candidate, ignore_errors=True)
    staging.rename(ws.candidate)
    shutil.rmtree(ws.checkpoints, ignore_errors=True)  # finished: nothing left to resume
    m["verification"] = verification
    finish_stage(ws, "train", m, start, release=True)
    log.info(
        "train: %d steps (resumed from %d), loss %s -> %s, %.0f tokens/s; adapter verified (%d tensors)",
        m["global_step"],
        m["resumed_from_step"],
        m["first_logged_loss"],
        m["last_logged_loss"],
        m["tokens_per_s"] or 0,
        verification["tensors"],
    )
    return m


def verify_candidate(
    ws: Layout, params: Params, adapter: Path, expected: dict, eval_rows: list[dict], meta: dict, m: dict
) -> dict:
    """The saved adapter has every trained tensor, and loaded back onto a fresh base it gives the eval loss training
    ended at (distributed saves have written empty placeholders elsewhere)."""
    verification = verify_adapter(adapter, expected)
    if eval_rows:
        model = load_with_adapter(params.model, ws.root, adapter, meta["label2id"])
        reloaded = evaluate_rows(model, eval_rows, meta["pad_id"], params.train.batch_size, params.model.task)
        loss, trained = reloaded["eval_loss"], m["eval_loss_in_training"]
        tol = 1e-3 if m["precision"] == "fp32" else 3e-2
        if abs(loss - trained) > tol * max(1.0, abs(trained)):
            raise VerifyAdapterError(
                f"{adapter}: reloaded onto the base, eval loss is {loss:.6f} but training ended at "
                f"{trained:.6f}; the saved adapter is not what was trained."
            )
        verification["reloaded_eval_loss"] = loss
    return verification


def write_loss_plot(ws: Layout, history: list[dict]) -> None:
    """data/plots/train_loss.csv (a DVC plots file) and a PNG for the Prefect UI."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "loss", "eval_loss"])
    for h in history:
        w.writerow([h["step"], h.get("loss", ""), h.get("eval_loss", "")])
    ws.loss_csv.parent.mkdir(parents=True, exist_ok=True)
    ws.loss_csv.write_text(buf.getvalue())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    tr = [(h["step"], h["loss"]) for h in history if "loss" in h]
    ev = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if tr:
        ax.plot(*zip(*tr), label="train loss")
    if ev:
        ax.plot(*zip(*ev), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ws.loss_png)
    plt.close(fig)


def run_evaluate(ctx: StageContext) -> dict:
    """Candidate and current production adapter, both on this run's held-out split (and the QA file)."""
    start = time.perf_counter()
    ws, params = ctx.ws, ctx.params
    meta = read_json(ws.dataset_meta, "build_dataset")
    rows = read_jsonl(ws.train_dir / "eval.jsonl", "build_dataset")
    if not rows:
        raise ConfigError(
            "dataset.eval_share is 0, so there is no held-out split to compare adapters on. "
            "Set dataset.eval_share above 0 (e.g. 0.1)."
        )
    cand_info = read_json(ws.candidate / "ragtune.json", "train")
    qa = None  # (tokenizer, questions), read once for both adapters
    if params.evaluate.qa_file and params.model.task == "causal_lm":
        tokenizer = load_lm_tokenizer(params.model, ws.root)  # a text-trained adapter still answers through a template
        qa = (
            tokenizer,
            read_qa(resolve_path(ws.root, params.evaluate.qa_file)),
            meta["template"] or chat_template(tokenizer, params.dataset.fallback_template),
        )

    def score(adapter_dir: Path) -> dict:
        model = load_with_adapter(params.model, ws.root, adapter_dir, meta["label2id"])
        out = evaluate_rows(model, rows, meta["pad_id"], params.evaluate.batch_size, params.model.task)
        if qa:
            out.update(
                score_qa(model, qa[0], qa[2], qa[1], params.evaluate.max_new_tokens, params.dataset.system_prompt)
            )
        return out

    result = {
        "candidate": score(ws.candidate / "adapter"),
        "candidate_run": cand_info["run_key"],
        "production": None,
        "production_version": None,
        "note": "no production adapter yet",
    }
    registry = ModelRegistry(ws)
    prod = registry.production()
    if prod:
        prod_dir = registry.folder(prod["version"])
        info = registry.info(prod["version"])
        result["production_version"] = prod["version"]
        if (
            info["base_model"] == params.model.base
            and info["task"] == params.model.task
            and info.get("label2id") == meta["label2id"]
        ):
            result["production"] = score(prod_dir / "adapter")
            result["note"] = "both adapters scored on this run's held-out split"
        else:
            result["production"] = prod.get("metrics")
            result["note"] = (
                f"production {prod['version']} has another base/task/labels; compared with the "
                "metrics recorded when it was promoted"
            )
    finish_stage(ws, "evaluate", result, start, release=True)
    c = result["candidate"]
    log.info(
        "evaluate: candidate eval_loss %.4f%s; production %s",
        c["eval_loss"],
        f", f1 {c['f1']}" if "f1" in c else "",
        result["production_version"] or "none",
    )
    return result


def run_promote(ctx: StageContext) -> dict:
    """Keep the candidate as a version; move the production pointer only when it beats production."""
    start = time.perf_counter()
    ws, params = ctx.ws, ctx.params
    ev = read_json(ws.stage_metrics("evaluate"), "evaluate")
    read_json(ws.candidate / "ragtune.json", "train")
    metric = primary_metric(params.promote.metric, params.model.task)
    decision = decide(ev["candidate"], ev["production"], metric, params.promote.min_delta)
    version = new_version()
    entry = ModelRegistry(ws).record(ws.candidate, version, decision, ev["candidate"], ev["production_version"])
    stats = {
        "version": version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "metric": metric,
        "candidate": decision.candidate,
        "production": decision.production,
        "previous_production": ev["production_version"],
        "production_version": version if decision.promote else ev["production_version"],
        "at": entry["at"],
    }
    finish_stage(ws, "promote", stats, start)
    log.info("promote: %s %s (%s)", version, "PROMOTED" if decision.promote else "kept, not promoted", decision.reason)
    return stats


L = PROJECT
STAGES = (
    Stage(
        "build_dataset",
        "model",
        run_build_dataset,
        params=(
            "model.base",
            "model.revision",
            "model.task",
            "model.trust_remote_code",
            "dataset",
            "retrieve",
            "embed",
            "index.collection",
            "index.engine",
            "index.local_path",
            "index.sparse",
            "index.timeout_s",
            "index.retries",
            "index.retry_backoff_s",
        ),
        source_param="dataset.sources",
        deps=(rel(L.chunks_dir), rel(L.index_manifest)),
        outs=(rel(L.train_dir),),
        metrics=(rel(L.train_quality),),
    ),
    Stage(
        "train",
        "model",
        run_train,
        params=("model", "train"),
        deps=(rel(L.train_dir), rel(L.deepspeed_configs)),
        outs=(rel(L.candidate),),
        plots=(rel(L.loss_csv),),
    ),
    Stage(
        "evaluate",
        "model",
        run_evaluate,
        params=("model", "evaluate", "dataset.system_prompt"),
        deps=(rel(L.candidate), rel(L.train_dir)),
    ),
    Stage(
        "promote",
        "model",
        run_promote,
        params=("promote", "model.task"),
        deps=(rel(L.candidate), rel(L.stage_metrics("evaluate"))),
        outs=(rel(L.versions),),
        git_outs=(rel(L.production), rel(L.lineage)),
    ),
)
