"""`python -m benchmarks [--quick] [--out FILE]`: every ragtune speed claim as a ratio measured in one run.

Sections (each with its baseline measured in the same run, on the same machine):
  refresh     full / unchanged / 1% churn refresh: ragtune vs LlamaIndex IngestionPipeline vs LangChain index()
  bare        ragtune's embed and index stages vs sentence-transformers encode + qdrant-client upload_points
  efficiency  the same two stages alternating with the bare calls, best of N (targets >= 0.9)
  overhead    fixed orchestration cost: a 1-document refresh, wall minus stage work
  training    LoRA train stage vs bare HF Trainer + PEFT (benchmarks/train_lora.py): tiny Llama and SmolLM2-135M
  encoders    ONNX Runtime / OpenVINO (fp32, int8) vs PyTorch: speed and retrieval quality
  knowledge   base / rag / ft (kb text) / ft (QA) / hybrid (RAFT) on fictional facts and the sample corpus
  generation  batched greedy answers vs one model.generate per question (benchmarks/injection.py)
  scale       the store alone at 10k/100k/1M points (qdrant-edge vs local mode), refresh at 1k/10k documents,
              Dask embedding with 1 vs 2 workers (benchmarks/scale.py)
Results: JSON (--out) and a markdown table beside it (same name, .md), printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks import dedup, fusion, injection, refresh, scale, web
from benchmarks.encoders import compare_encoders
from benchmarks.report import markdown, publish
from tasks.core.config import load_params
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout, read_jsonl
from tasks.pipeline import run_stage, stage_names

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "benchmarks/RESULTS.json"  # the run the docs show (docs/benchmarks.md between the markers)
SECTIONS = (
    "refresh",
    "bare",
    "efficiency",
    "overhead",
    "training",
    "encoders",
    "knowledge",
    "generation",
    "scale",
    "dedup",
    "fusion",
    "web",
)
QUICK = dict(
    docs=40,
    efficiency_chunks=48,
    repeats=1,
    train_steps=8,
    train_repeats=2,
    encoder_texts=32,
    encoder_docs=30,
    encoder_questions=40,
    overhead_runs=(2, 1),
    smollm2_steps=2,
    entities=4,
    gen_questions=8,
    sample_questions=6,
    scale_points=[2000],
    scale_docs=[30],
    dedup_docs=200,
    fusion_entities=8,
    web_pages=60,
    train=dict(lr=5e-4, max_steps=2, kb_text_epochs=1, qa_epochs=1, raft_epochs=1, raft_distractors=1, sample_epochs=1),
)
# SmolLM2 trains at ~120 tokens/s on 2 CPU cores: the knowledge section's sizes keep it near half an hour
FULL = dict(
    docs=2000,
    efficiency_chunks=1000,
    repeats=3,
    train_steps=60,
    train_repeats=2,
    encoder_texts=1024,
    encoder_docs=400,
    encoder_questions=600,
    overhead_runs=(3, 2),
    smollm2_steps=6,
    entities=50,
    gen_questions=26,
    sample_questions=None,
    scale_points=[10_000, 100_000, 1_000_000],
    scale_docs=[1000, 10_000],
    dedup_docs=10_000,
    fusion_entities=300,
    web_pages=2000,
    train=dict(
        lr=5e-4, max_steps=-1, kb_text_epochs=10, qa_epochs=3, raft_epochs=2, raft_distractors=1, sample_epochs=2
    ),
)  # overhead: Prefect's ephemeral server, then `ragtune server` running


def machine() -> dict:
    """Where the numbers came from: CPU, cores, memory, OS, GPU, library versions, commit."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (int(line.split()[1]) // 1024 for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")),
        None,
    )
    libs = {}
    for dist in (
        "torch",
        "transformers",
        "sentence-transformers",
        "qdrant-client",
        "prefect",
        "peft",
        "deepspeed",
        "llama-index-core",
        "langchain-core",
        "langchain-classic",
        "onnxruntime",
        "openvino",
    ):
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            libs[dist] = None
    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu,
        "libraries": libs,
        "commit": commit.stdout.strip() or None,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def section(results: dict, name: str, fn) -> None:
    """Run one section; a failure is recorded with its message and the other sections still run."""
    start = time.perf_counter()
    try:
        results[name] = {"status": "ok", **fn()}
    except Exception as exc:
        import traceback

        results[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[-2000:]}
        log(f"{name} failed:\n{traceback.format_exc()}")
    results[name]["section_seconds"] = round(time.perf_counter() - start, 1)


def bare_section(refresh_res: dict, work: Path) -> dict:
    """Per stage, ragtune's full-refresh stage time (embed.backend=torch: the same encoder) next to the bare-library
    script doing that stage's job."""
    full = refresh_res["ragtune_torch_full"]
    bare = refresh.run_bare(Path(refresh_res["chunks_file"]), work)
    stages = full["stage_seconds"]
    bare_embed = bare["import_seconds"] + bare["model_load_seconds"] + bare["encode_seconds"]
    return {
        "chunks": bare["chunks"],
        "ragtune_stage_seconds": stages,
        "ragtune_wall_seconds": full["wall_seconds"],
        "bare": bare,
        "embed": {
            "ragtune_seconds": stages["embed"],
            "bare_seconds": round(bare_embed, 2),
            "ratio_speed": round(bare_embed / stages["embed"], 3),
        },
        "index": {
            "ragtune_seconds": stages["index"],
            "bare_seconds": bare["upload_total_seconds"],
            "ratio_speed": round(bare["upload_total_seconds"] / stages["index"], 3),
        },
        "note": "ratio_speed = bare seconds / ragtune seconds (1.0 = as fast as the bare script); the bare "
        "embed time includes importing sentence-transformers and qdrant-client, as the stage's does",
    }


def _chunks(refresh_res: dict) -> list[dict]:
    return list(read_jsonl(Path(refresh_res["chunks_file"]), "chunk"))


def training_section(cfg: dict, work: Path) -> dict:
    """benchmarks/train_lora.py in a subprocess per configuration (DeepSpeed state stays out of this one)."""
    import torch

    configs = [
        ("tiny", "zero2", "auto", cfg["train_steps"], cfg["train_repeats"], 8),
        ("smollm2", "zero2", "auto", cfg["smollm2_steps"], 2, 4),
    ]  # best of 2, each side first once
    if torch.cuda.is_available():
        configs += [
            ("small", zero, "bf16", cfg["train_steps"], cfg["train_repeats"], 8) for zero in ("none", "zero2", "zero3")
        ]
    runs = {}
    for size, zero, precision, steps, repeats, batch in configs:
        out = work / f"train-{size}-{zero}.json"
        log(f"training {size} {zero}")
        cmd = [
            sys.executable,
            str(REPO / "benchmarks/train_lora.py"),
            "--size",
            size,
            "--zero",
            zero,
            "--precision",
            precision,
            "--steps",
            str(steps),
            "--repeats",
            str(repeats),
            "--batch-size",
            str(batch),
            "--out",
            str(out),
        ]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=refresh.bench_env(work))
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} failed:\n{proc.stderr[-3000:]}")
        runs[f"{size}_{zero}"] = json.loads(out.read_text())
    return {"runs": runs, "gpu": "not available: CPU runs only" if not torch.cuda.is_available() else "cuda"}


def encoders_section(cfg: dict, work: Path) -> dict:
    """Chunks of a generated corpus with its generated questions (the deciding set) and of the sample corpus with
    the hand-written questions, both made by ragtune's stages up to chunk."""
    from benchmarks.corpus import generate, generated_qa
    from tasks.core.qa import read_qa_set

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    generated = work / "encoders-corpus"
    generate(generated, cfg["encoder_docs"], seed=11)
    quality = {}
    for name, corpus, qa in (
        ("generated", generated, generated_qa(generated, cfg["encoder_questions"], seed=5)),
        ("sample", REPO / "data/sample/corpus", read_qa_set(REPO / "data/sample/questions.jsonl")),
    ):
        project = refresh.new_project(work / f"encoders-{name}")
        params = load_params(project / "params.yaml", [f"ingest.sources=[{corpus}]"])
        ws = Layout(project)
        for stage in stage_names("kb")[: stage_names("kb").index("chunk") + 1]:  # up to the chunks
            run_stage(stage, StageContext(ws, params))
        quality[name] = (list(read_jsonl(ws.chunks, "chunk")), [{**row, "doc_ids": []} for row in qa])
    texts = [c["text"] for c in quality["generated"][0]][: cfg["encoder_texts"]]
    return compare_encoders(texts, quality, params.embed.model, params.embed.batch_size, work, log)


def replace_sections(published: Path, run: dict) -> None:
    """An --only run replaces those sections of the published results, each keeping the machine and commit of the
    run that measured it (`section_runs`): every table still comes from one run, and says which."""
    old = json.loads(published.read_text())
    runs = old.setdefault("section_runs", {})
    for name in SECTIONS:
        if name in run:
            old[name] = run[name]
            runs[name] = {"mode": run["mode"], "config": run["config"], "machine": run["machine"]}
    published.write_text(json.dumps(old, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run: checks wiring, not speed)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/bench.json", help="JSON results file")
    ap.add_argument("--docs", type=int, help="documents in the generated corpus (default 2000, quick 40)")
    ap.add_argument("--seed", type=int, default=7, help="corpus seed")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument(
        "--publish",
        action="store_true",
        help="also make this run benchmarks/RESULTS.json (+ .md) and render it into docs/benchmarks.md",
    )
    ap.add_argument("--points", type=int, nargs="+", help="scale: store sizes (default 10000 100000 1000000)")
    ap.add_argument("--scale-docs", type=int, nargs="+", help="scale: refresh sizes in documents (default 1000 10000)")
    a = ap.parse_args(argv)
    if a.docs is not None and a.docs < 3:
        ap.error(f"--docs {a.docs}: the churn step changes, deletes and adds one document each; use --docs 3 or more")
    cfg = dict(QUICK if a.quick else FULL)
    if a.docs:
        cfg["docs"] = a.docs
    if a.points:
        cfg["scale_points"] = a.points
    if a.scale_docs:
        cfg["scale_docs"] = a.scale_docs
    wanted = set(a.only or SECTIONS)
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-"))
    log(f"work folder {work}; sections {sorted(wanted)}")
    results: dict = {
        "benchmark": "ragtune",
        "mode": "quick" if a.quick else "full",
        "config": cfg,
        "machine": machine(),
    }
    started = time.perf_counter()
    needs_corpus = wanted & {"refresh", "bare", "efficiency"}
    if needs_corpus:
        section(
            results, "refresh", lambda: refresh.refresh_scenarios(work / "refresh", cfg["docs"], a.seed, 200, 32, log)
        )
    ok = results.get("refresh", {}).get("status") == "ok"
    if "bare" in wanted and ok:
        section(results, "bare", lambda: bare_section(results["refresh"], work))
    if "efficiency" in wanted and ok:
        section(
            results,
            "efficiency",
            lambda: refresh.stage_efficiency(
                _chunks(results["refresh"])[: cfg["efficiency_chunks"]], work, cfg["repeats"], log
            ),
        )
    if "overhead" in wanted:
        section(results, "overhead", lambda: refresh.orchestration_overhead(work, cfg["overhead_runs"], log))
    if "training" in wanted:
        section(results, "training", lambda: training_section(cfg, work))
    if "encoders" in wanted:
        section(results, "encoders", lambda: encoders_section(cfg, work))
    if "knowledge" in wanted:
        section(results, "knowledge", lambda: injection.knowledge_section(cfg, work, log))
    if "generation" in wanted:
        section(results, "generation", lambda: injection.generation_section(cfg, work, log))
    if "scale" in wanted:
        section(
            results,
            "scale",
            lambda: scale.scale_section(work / "scale", cfg["scale_points"], cfg["scale_docs"], a.seed, log),
        )
    if "dedup" in wanted:
        section(
            results,
            "dedup",
            lambda: dedup.dedup_section(work / "dedup", cfg["dedup_docs"], a.seed, cfg["repeats"], log),
        )
    if "fusion" in wanted:
        section(results, "fusion", lambda: fusion.fusion_section(work / "fusion", cfg["fusion_entities"], log))
    if "web" in wanted:
        section(results, "web", lambda: web.web_section(work / "web", cfg["web_pages"], a.seed, log))
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    a.out.with_suffix(".md").write_text(table)
    print(table)
    log(f"results: {a.out} and {a.out.with_suffix('.md')}")
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") == "error"]
    if a.publish and (a.quick or failed):  # the docs show one full-size run whose sections all finished
        log(f"not published: a --quick run or failed sections ({failed}) are not figures to show")
    elif a.publish:  # as written, never a hand-typed figure; an --only run replaces its own sections whole
        shutil.copyfile(a.out, PUBLISHED) if not a.only else replace_sections(PUBLISHED, results)
        publish(PUBLISHED, REPO / "docs/benchmarks.md", REPO / "README.md")
        log(f"published: {PUBLISHED} and docs/benchmarks.md")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(isinstance(v, dict) and v.get("status") == "error" for v in results.values()) else 0
