"""The fusion section: which way of merging dense and sparse retrieval ranks the right chunk first.

Two QA sets, each over its own index built by ragtune's kb stages:
  sample     data/sample/questions.jsonl (26 hand-written questions) over the shipped sample corpus
  generated  benchmarks/knowledge.py: fictional entities with four facts each, asked in the eval phrasings
Per retriever (dense, sparse, hybrid with each fusion Qdrant's Query API offers, and ragtune's convex combination
fused in Python over the same candidates): recall@1, recall@5 and MRR@5
as tasks/kb/retrieval_eval.py scores them, from one top-5 search per question (warm model, no query cache).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks import knowledge
from benchmarks.refresh import new_project

REPO = Path(__file__).resolve().parents[1]


def rrf(k: int, weighted: str | None = None, label: str = "") -> tuple[str, str, list[str]]:
    """A hybrid RRF retriever at k, optionally with the dense or sparse list weighted 2."""
    overrides = ["retrieve.fusion=rrf", f"retrieve.rrf_k={k}"]
    if weighted:
        overrides.append(f"retrieve.{weighted}_weight=2")
    return f"hybrid RRF k={k}{f', {weighted} weight 2' if weighted else ''}{label}", "hybrid", overrides


# (label, retrieval mode, params overrides)
CONFIGS: list[tuple[str, str, list[str]]] = [
    ("dense", "dense", []),
    ("sparse (BM25)", "sparse", []),
    rrf(60),
    rrf(10),
    rrf(2, label=" (Qdrant's default k)"),
    *(rrf(k, side) for k in (60, 2) for side in ("sparse", "dense")),
    ("hybrid DBSF", "hybrid", ["retrieve.fusion=dbsf"]),
    *(
        (f"hybrid convex alpha={a}", "hybrid", ["retrieve.fusion=convex", f"retrieve.convex_alpha={a}"])
        for a in (0.3, 0.5, 0.7)
    ),
]


def build_index(root: Path, corpus: Path) -> list[str]:
    """Run the kb stages over `corpus` in the project at `root`; returns the overrides that name the corpus."""
    from tasks.core.config import load_params
    from tasks.core.stage import StageContext
    from tasks.core.workspace import Layout
    from tasks.pipeline import run_stage, stage_names

    overrides = [f"ingest.sources=[{corpus}]", "validate.max_duplicate_share=1.0", "retrieve.qa_file=null"]
    params = load_params(root / "params.yaml", overrides)
    for stage in stage_names("kb", optional=False):
        run_stage(stage, StageContext(Layout(root), params))
    return overrides


def score_configs(root: Path, overrides: list[str], rows: list[dict]) -> list[dict]:
    from tasks.core.config import load_params
    from tasks.kb.retrieval import Retriever, without_query_cache
    from tasks.kb.retrieval_eval import score_row

    out = []
    for label, mode, extra in CONFIGS:
        params = without_query_cache(load_params(root / "params.yaml", [*overrides, *extra]))
        r1 = r5 = mrr = 0.0
        with Retriever(root, params, mode) as retriever:
            retriever.warm()
            for row in rows:
                hits = retriever.search(row["question"], 5)
                r1 += score_row(hits, row, 1)[0]
                recall, rr = score_row(hits, row, 5)
                r5, mrr = r5 + recall, mrr + rr
        n = len(rows)
        out.append(
            {
                "retriever": label,
                "mode": mode,
                "overrides": extra,
                "recall_at_1": round(r1 / n, 4),
                "recall_at_5": round(r5 / n, 4),
                "mrr_at_5": round(mrr / n, 4),
            }
        )
    return out


def fusion_section(work: Path, entities: int, log) -> dict:
    from tasks.core.qa import read_qa_set

    sets = {}
    root = new_project(work / "sample")
    shutil.copytree(REPO / "data/sample/corpus", root / "corpus")
    log("fusion: indexing the sample corpus")
    overrides = build_index(root, root / "corpus")
    rows = read_qa_set(REPO / "data/sample/questions.jsonl")
    log(f"fusion: {len(CONFIGS)} retrievers on {len(rows)} sample questions")
    sets["sample"] = {"questions": len(rows), "rows": score_configs(root, overrides, rows)}

    root = new_project(work / "generated")
    built = knowledge.build_corpus(root / "knowledge", entities, seed=0)
    log(f"fusion: indexing {entities} generated entity documents")
    overrides = build_index(root, Path(built["corpus"]))
    rows = read_qa_set(Path(built["eval_qa"]))
    log(f"fusion: {len(CONFIGS)} retrievers on {len(rows)} generated questions")
    sets["generated"] = {"questions": len(rows), "documents": entities, "rows": score_configs(root, overrides, rows)}
    from tasks.core.config import load_params

    return {
        "sets": sets,
        "candidates": load_params(root / "params.yaml", overrides).retrieve.candidates,
        "note": "one top-5 search per question; recall@1 and MRR@5 from the same ranked list",
    }
