"""Knowledge injection and generation speed, measured with the packaged SmolLM2-135M-Instruct on this machine.

knowledge   a generated corpus of fictional facts no model can know (benchmarks/knowledge.py: train and eval
            questions phrased differently) and the shipped sample corpus. Per mode: base (closed book), rag,
            ft on the knowledge base's text (kb_text), ft on the training QA (qa), hybrid = RAFT adapter + passages;
            SQuAD EM / F1 / contains, p50/p95 latency, training time and adapter size. Every adapter is trained by
            ragtune's own stages and scored as the version it was saved as.
generation  answers/s of batched greedy generation (Answerer.answer_many, generate.batch_size) against
            one-at-a-time `model.generate` calls on the same prompts, same model, same process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.knowledge import build_corpus
from benchmarks.refresh import REPO, new_project
from tasks.answer.answerer import Answerer, prompt_ids
from tasks.answer.compare import evaluate_mode
from tasks.core.config import load_params
from tasks.core.qa import read_qa_set
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.kb.retrieval import without_query_cache
from tasks.lm.generate import generate_batch
from tasks.pipeline import run_stage, stage_names
from tasks.train.adapter import ADAPTER_FILE
from tasks.train.registry import ModelRegistry

KB_STAGES = stage_names("kb", optional=False)  # no retrieve.qa_file here
TRAIN_STAGES = stage_names("model")


def _project(path: Path, models: Path, corpus: Path) -> Path:
    """A project over `corpus` sharing one converted model folder (the GGUF converts once per run)."""
    import shutil

    root = new_project(path)
    shutil.copytree(REPO / "infra/deepspeed", root / "infra/deepspeed")
    (root / "data/cache").mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    (root / "data/cache/models").symlink_to(models, target_is_directory=True)
    return root


def _params(root: Path, corpus: Path, extra: list[str]):
    return load_params(root / "params.yaml", [f"ingest.sources=[{corpus}]", "validate.max_duplicate_share=1.0", *extra])


def _index(root: Path, corpus: Path) -> float:
    start = time.perf_counter()
    params = _params(root, corpus, [])
    for stage in KB_STAGES:
        run_stage(stage, StageContext(Layout(root), params))
    return time.perf_counter() - start


def _train(root: Path, corpus: Path, overrides: list[str]) -> dict:
    """One adapter through build_dataset -> train -> evaluate -> promote; its version, time and size."""
    params = _params(root, corpus, overrides)
    start = time.perf_counter()
    out = {stage: run_stage(stage, StageContext(Layout(root), params)) for stage in TRAIN_STAGES}
    version = out["promote"]["version"]
    weights = ModelRegistry(Layout(root)).folder(version) / "adapter" / ADAPTER_FILE
    return {
        "version": version,
        "retrain_seconds": round(time.perf_counter() - start, 1),
        "train_seconds": out["train"]["train_seconds"],
        "tokens_per_s": out["train"]["tokens_per_s"],
        "steps": out["train"]["global_step"],
        "train_examples": out["build_dataset"]["train_examples"],
        "adapter_mb": round(weights.stat().st_size / 1e6, 2),
        "format": out["build_dataset"]["format"],
        "raft": out["build_dataset"].get("raft"),
    }


def _score(root: Path, corpus: Path, rows: list[dict], mode: str, adapter: str | None, extra: list[str]) -> dict:
    params = without_query_cache(_params(root, corpus, extra))
    answerer = Answerer(root, params, adapter)
    try:
        res = evaluate_mode(answerer.answer_many, mode, rows, params.generate.passages)
    finally:
        answerer.close()
    keep = (
        "status",
        "reason",
        "exact",
        "f1",
        "contains",
        f"recall_at_{params.generate.passages}",
        "p50_ms",
        "p95_ms",
        "answers_per_s",
        "params_m",
        "samples",
    )
    return {k: res.get(k) for k in keep}


def knowledge_section(cfg: dict, work: Path, log: Callable[[str], None]) -> dict:
    """The table per mode on the fictional corpus, then on the sample corpus."""
    models = work / "models-cache"
    kb = build_corpus(work / "fictional", entities=cfg["entities"], seed=0)
    corpus = Path(kb["corpus"])
    root = _project(work / "fictional-project", models, corpus)
    log(f"knowledge: indexing {kb['documents']} fictional documents")
    index_s = _index(root, corpus)
    evals = read_qa_set(Path(kb["eval_qa"]))
    train = cfg["train"]
    common = [
        "train.deepspeed=none",
        f"train.learning_rate={train['lr']}",
        "train.save_steps=100000",
        f"train.max_steps={train['max_steps']}",
        "dataset.min_examples=2",
        # hold out the minimum (2 examples) for evaluate: every held-out fact is one ft cannot have learned
        "dataset.eval_share=0.01",
        "dataset.min_eval_examples=2",
    ]
    adapters = {}
    plans = {  # format, its training overrides
        "ft_kb_text": ["dataset.format=kb_text", "dataset.max_length=256", f"train.epochs={train['kb_text_epochs']}"],
        "ft_qa": ["dataset.format=qa", f"dataset.sources=[{kb['train_qa']}]", f"train.epochs={train['qa_epochs']}"],
        "raft": [
            "dataset.format=raft",
            f"dataset.sources=[{kb['train_qa']}]",
            f"dataset.raft.distractors={train['raft_distractors']}",
            f"train.epochs={train['raft_epochs']}",
        ],
    }
    for name, overrides in plans.items():
        log(f"knowledge: training the {name} adapter")
        adapters[name] = _train(root, corpus, [*common, *overrides])
    rows = []
    for label, mode, adapter in (
        ("base", "base", None),
        ("rag", "rag", None),
        ("ft (kb text)", "ft", "ft_kb_text"),
        ("ft (QA)", "ft", "ft_qa"),
        ("hybrid (RAFT)", "hybrid", "raft"),
        ("rag + QA adapter", "hybrid", "ft_qa"),
    ):
        log(f"knowledge: scoring {label} on {len(evals)} questions")
        trained = adapters.get(adapter) if adapter else None
        res = _score(root, corpus, evals, mode, trained and trained["version"], [])
        rows.append(
            {
                "mode": label,
                **res,
                "train_seconds": trained and trained["train_seconds"],
                "adapter_mb": trained and trained["adapter_mb"],
            }
        )
    out = {
        "fictional": {
            "corpus": kb,
            "index_seconds": round(index_s, 1),
            "eval_questions": len(evals),
            "adapters": adapters,
            "rows": rows,
        }
    }

    log("knowledge: the sample corpus (RAFT adapter on data/sample/train/kb_qa.jsonl)")
    sample = REPO / "data/sample/corpus"
    sroot = _project(work / "sample-project", models, sample)
    _index(sroot, sample)
    raft = _train(
        sroot,
        sample,
        [
            "train.deepspeed=none",
            f"train.epochs={train['sample_epochs']}",
            f"train.learning_rate={train['lr']}",
            "train.save_steps=100000",
            f"train.max_steps={train['max_steps']}",
            f"dataset.sources=[{REPO / 'data/sample/train/kb_qa.jsonl'}]",
        ],
    )
    questions = read_qa_set(REPO / "data/sample/questions.jsonl")[: cfg["sample_questions"]]
    srows = []
    for label, mode, adapter in (
        ("base", "base", None),
        ("rag", "rag", None),
        ("ft (RAFT adapter, no passages)", "ft", raft["version"]),
        ("hybrid (RAFT)", "hybrid", raft["version"]),
    ):
        log(f"knowledge: sample {label}")
        srows.append({"mode": label, **_score(sroot, sample, questions, mode, adapter, [])})
    out["sample"] = {"questions": len(questions), "adapter": raft, "rows": srows}
    return out


def generation_section(cfg: dict, work: Path, log: Callable[[str], None]) -> dict:
    """Batched greedy answers (what compare runs) against one model.generate per question, same prompts."""
    sample = REPO / "data/sample/corpus"
    root = _project(work / "generation-project", work / "models-cache", sample)
    _index(root, sample)
    questions = [r["question"] for r in read_qa_set(REPO / "data/sample/questions.jsonl")][: cfg["gen_questions"]]
    params = _params(root, sample, [])
    answerer = Answerer(root, params)
    try:
        gen = answerer.generator("rag")
        passages = [answerer.retriever().search(q, params.generate.passages) for q in questions]
        prompts = [prompt_ids(gen, q, p, params)[0] for q, p in zip(questions, passages)]
        g = params.generate
        runs: dict[str, list[float]] = {"one_at_a_time": [], "batched": []}
        answers = {}
        for _ in range(cfg["repeats"]):  # alternate, so warm-up favours neither side
            start = time.perf_counter()
            answers["one_at_a_time"] = [
                generate_batch(gen.model, gen.tokenizer, [p], g.max_new_tokens)[0] for p in prompts
            ]
            runs["one_at_a_time"].append(time.perf_counter() - start)
            start = time.perf_counter()
            answers["batched"] = [
                a
                for i in range(0, len(prompts), g.batch_size)
                for a in generate_batch(gen.model, gen.tokenizer, prompts[i : i + g.batch_size], g.max_new_tokens)
            ]
            runs["batched"].append(time.perf_counter() - start)
    finally:
        answerer.close()
    best = {k: min(v) for k, v in runs.items()}
    same = sum(a == b for a, b in zip(answers["one_at_a_time"], answers["batched"]))
    log(
        f"generation: {len(prompts)} prompts, one at a time {best['one_at_a_time']:.1f} s, batched "
        f"{best['batched']:.1f} s"
    )
    return {
        "questions": len(prompts),
        "batch_size": params.generate.batch_size,
        "max_new_tokens": params.generate.max_new_tokens,
        "model": params.model.base,
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "one_at_a_time": {
            "seconds": round(best["one_at_a_time"], 2),
            "answers_per_s": round(len(prompts) / best["one_at_a_time"], 2),
        },
        "batched": {"seconds": round(best["batched"], 2), "answers_per_s": round(len(prompts) / best["batched"], 2)},
        "ratio_answers_per_s": round(best["one_at_a_time"] / best["batched"], 2),
        "identical_answers": same,
        "all_runs_seconds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "note": "greedy; identical_answers counts batched answers equal to the one-at-a-time answer "
        "(left padding can change the last float bits, rarely a token)",
    }


if __name__ == "__main__":  # a single section, for trying settings: python -m benchmarks.injection knowledge
    import sys
    import tempfile

    section = sys.argv[1] if len(sys.argv) > 1 else "generation"
    from benchmarks.runner import FULL, QUICK

    conf = QUICK if "--quick" in sys.argv else FULL
    fn = knowledge_section if section == "knowledge" else generation_section
    print(json.dumps(fn(conf, Path(tempfile.mkdtemp(prefix="ragtune-inj-")), print), indent=2))
