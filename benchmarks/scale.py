"""The scale section: how cost grows with the work.

  store    the store alone at 10k / 100k / 1M points (seeded vectors): upsert points/s, HNSW build seconds,
           query p50/p95 per mode, disk and peak RSS; ragtune's embedded store (qdrant-edge) vs qdrant-client
           local mode, the previous default (local mode only up to LOCAL_MAX points: it keeps every point in Python)
  refresh  a whole refresh of 1k and 10k generated documents: wall, embed chunks/s, index points/s, peak RSS,
           and the index stage's share of the wall
  dask     the embed stage on a local Dask cluster with 1 vs 2 workers (the same chunks, an empty cache)

Each measurement runs in its own process (`python -m benchmarks.scale store|refresh ...`), so peak RSS is that
measurement's alone. The section prints one JSON line per child and returns them all.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 384
FINGERPRINT = {"dim": DIM, "distance": "cosine", "sparse": True, "model": "synthetic", "chunking": "none"}
VOCAB = 50_000
LOCAL_MAX = 10_000  # local mode searches in Python: a sparse query over 100k points takes seconds, 1M is hours
QUERIES = 200
LOCAL_QUERIES = 50  # local mode answers a hybrid query at 10k points in ~0.5 s
WARMUP = 20  # untimed queries per mode first: the first dense queries after a reopen page the HNSW graph in


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def term_probabilities() -> np.ndarray:
    """Zipf over the vocabulary, as words in text; the most frequent 50 are stopwords the tokenizer drops."""
    p = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
    p[:50] = 0
    return p / p.sum()


def batches(n: int, size: int, seed: int):
    """Seeded points in batches: unit vectors, BM25-like sparse vectors (Zipf terms), a chunk-sized payload."""
    from tasks.kb.vectors import Point

    rng = np.random.default_rng(seed)
    zipf = term_probabilities()
    filler = "lorem ipsum dolor sit amet " * 12
    for start in range(0, n, size):
        k = min(size, n - start)
        dense = rng.standard_normal((k, DIM), dtype=np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        terms = rng.choice(VOCAB, size=(k, 40), p=zipf)
        out = []
        for i in range(k):
            idx, counts = np.unique(terms[i], return_counts=True)
            pid = f"{start + i + 1:032x}"
            payload = {"doc_id": f"doc-{(start + i) // 4}", "doc_hash": "h", "text": filler}
            out.append(Point(pid, dense[i].tolist(), payload, (idx.tolist(), counts.astype(float).tolist())))
        yield out


def query_set(seed: int) -> list[tuple[list[float], tuple[list[int], list[float]]]]:
    rng = np.random.default_rng(seed + 1)
    dense = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    zipf = term_probabilities()
    return [
        (dense[i].tolist(), (sorted({int(t) for t in rng.choice(VOCAB, size=4, p=zipf)}), [1.0] * 4))
        for i in range(QUERIES)
    ]


def latencies(store, queries) -> dict:
    """p50/p95 per mode over `queries`, after WARMUP untimed ones (the cold first call is timed on its own)."""
    from tasks.kb.vectors import Fusion

    out = {}
    for mode in ("dense", "sparse", "hybrid"):
        times = []
        for i, (dense, sparse) in enumerate([*queries[:WARMUP], *queries]):
            d = dense if mode != "sparse" else None
            s = (sparse[0], [1.0] * len(sparse[0])) if mode != "dense" else None
            t = time.perf_counter()
            store.query(d, s, 5, 20, Fusion(k=60))
            if i >= WARMUP:
                times.append((time.perf_counter() - t) * 1000)
        out[mode] = {
            "p50_ms": round(float(np.percentile(times, 50)), 3),
            "p95_ms": round(float(np.percentile(times, 95)), 3),
        }
    return out


def disk_mb(path: Path) -> float:
    return round(sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def store_child(engine: str, n: int, work: Path, seed: int) -> dict:
    """Load n points into a new store, build what the engine builds, then time queries (in this process)."""
    from tasks.core.config import IndexParams

    params = IndexParams()
    queries = query_set(seed)
    if engine == "edge":
        from tasks.kb.edge import EdgeStore

        home = work / "edge"
        store = EdgeStore(home, params, writer=True)
        store.ensure_collection(FINGERPRINT, "scale")
    else:
        from qdrant_client import QdrantClient

        from tasks.kb.store import QdrantStore

        home = work / "local"
        store = QdrantStore(QdrantClient(path=str(home)), params, str(home), is_server=False)
        store.ensure_collection(FINGERPRINT, "scale")
    upsert = 0.0
    for batch in batches(n, 1024, seed):
        t = time.perf_counter()
        store.upsert(batch)
        upsert += time.perf_counter() - t
    t = time.perf_counter()
    published = {**store.commit(), **store.publish("scale")}  # edge: optimize (HNSW + sparse index), flush, stage
    commit_seconds = time.perf_counter() - t
    if engine == "edge":
        store.close()
        store = EdgeStore(home, params)  # a reader, as search / ask / compare open it
    t = time.perf_counter()
    store.count()
    first_query = time.perf_counter() - t
    result = {
        "engine": engine,
        "points": n,
        "upsert_seconds": round(upsert, 2),
        "upsert_points_per_s": round(n / upsert, 1),
        "hnsw_build_seconds": published.get("hnsw_seconds"),
        "commit_seconds": round(commit_seconds, 2),
        "first_call_seconds": round(first_query, 3),
        "query": latencies(store, queries if engine == "edge" else queries[:LOCAL_QUERIES]),
        "disk_mb": disk_mb(home),
        "peak_rss_mb": peak_rss_mb(),
    }
    store.close()
    return result


def refresh_child(project: Path, overrides: list[str]) -> dict:
    """Every kb stage in this process, as `dvc repro` runs them; per-stage seconds and this process's peak RSS."""
    from tasks.core.config import load_params
    from tasks.core.stage import StageContext
    from tasks.core.workspace import Layout
    from tasks.pipeline import run_stage, stage_names

    params = load_params(project / "params.yaml", overrides)
    ws = Layout(project)
    start = time.perf_counter()
    stats = {s: run_stage(s, StageContext(ws, params)) for s in stage_names("kb", optional=False)}
    wall = time.perf_counter() - start
    seconds = {s: v.get("seconds") for s, v in stats.items()}
    return {
        "documents": stats["validate"].get("documents") or stats["ingest"].get("documents"),
        "chunks": stats["chunk"]["chunks"],
        "wall_seconds": round(wall, 2),
        "stage_seconds": seconds,
        "embed_chunks_per_s": round(stats["embed"]["embedded"] / seconds["embed"], 1) if seconds["embed"] else None,
        "index_points_per_s": stats["index"].get("points_per_s"),
        "index_share": round(seconds["index"] / wall, 4),
        "hnsw_seconds": stats["index"].get("hnsw_seconds"),
        "peak_rss_mb": peak_rss_mb(),
    }


def dask_runs(work: Path, n_docs: int, seed: int, log) -> dict:
    """`ragtune refresh` with embed.workers=1 then 2 on the same corpus, each from an empty embedding cache; the
    embed stage's seconds, and whether the vectors are identical point for point."""
    from benchmarks import corpus
    from benchmarks.refresh import bench_env, new_project, ragtune_cli

    runs, vectors = [], []
    for workers in (1, 2):
        project = new_project(work / f"dask-{workers}")
        corpus.generate(project / "corpus", n_docs, seed)
        log(f"scale: refresh with embed.workers={workers} ({n_docs} documents)")
        cmd = [*ragtune_cli(), "refresh", f"embed.workers={workers}", "embed.shard_size=512"]
        cmd += ["--source", str(project / "corpus")]
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=bench_env(work))
        if proc.returncode != 0:
            raise RuntimeError(f"refresh with embed.workers={workers} failed:\n{proc.stderr[-3000:]}")
        embed = json.loads((project / "data/metrics/embed.json").read_text())
        vectors.append(np.load(project / "data/embeddings/vectors.npy"))
        runs.append(
            {
                "workers": workers,
                "chunks": embed["embedded"],
                "seconds": embed["seconds"],
                "chunks_per_s": round(embed["embedded"] / embed["seconds"], 1),
            }
        )
    runs[1]["identical"] = bool(np.array_equal(vectors[0], vectors[1]))
    return {"documents": n_docs, "runs": runs, "note": "embed stage seconds, model loading included (per worker)"}


def child(args: list[str], work: Path, log) -> dict:
    from benchmarks.refresh import bench_env

    cmd = [sys.executable, "-m", "benchmarks.scale", *args]
    log(f"scale: {' '.join(args)}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=bench_env(work))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scale_section(work: Path, points: list[int], docs: list[int], seed: int, log) -> dict:
    from benchmarks import corpus
    from benchmarks.refresh import new_project

    work.mkdir(parents=True, exist_ok=True)
    store = []
    for n in points:
        for engine in ("edge", "local"):
            if engine == "local" and n > LOCAL_MAX:
                continue
            folder = work / f"store-{engine}-{n}"
            store.append(child(["store", "--engine", engine, "--points", str(n), "--work", str(folder)], work, log))
            _rm(folder)
    refresh = []
    for n in docs:
        project = new_project(work / f"refresh-{n}")
        corpus.generate(project / "corpus", n, seed)
        overrides = [f"ingest.sources=[{project / 'corpus'}]", "retrieve.qa_file=null"]
        refresh.append(child(["refresh", "--project", str(project), *overrides], work, log))
    dask = dask_runs(work, docs[0], seed, log)
    return {
        "store": store,
        "refresh": refresh,
        "dask": dask,
        "local_mode_max_points": LOCAL_MAX,
        "queries": {"edge": QUERIES, "local": LOCAL_QUERIES, "warmup_per_mode": WARMUP},
        "note": "store: seeded 384-d unit vectors, 40 Zipf terms per point (BM25-like sparse), a 324-byte payload; "
        "queries: limit 5, 20 candidates per retriever, RRF k=60, through ragtune's store classes, after 20 untimed "
        "queries per mode. "
        "refresh: generated corpus, every kb stage in one process, embedding cache empty.",
    }


def _rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("store")
    s.add_argument("--engine", choices=("edge", "local"), required=True)
    s.add_argument("--points", type=int, required=True)
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--seed", type=int, default=7)
    r = sub.add_parser("refresh")
    r.add_argument("--project", type=Path, required=True)
    r.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    if a.what == "store":
        a.work.mkdir(parents=True, exist_ok=True)
        result = store_child(a.engine, a.points, a.work, a.seed)
    else:
        result = refresh_child(a.project, a.overrides)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
