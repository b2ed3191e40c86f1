"""Knowledge-base refresh measurements: ragtune (the real `ragtune refresh`), the bare libraries, the peers.

Every system runs as a fresh process per refresh, the way a nightly job would, so each wall time includes
its imports and model load; the work inside (stages, or the peer's pipeline call) is reported beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.corpus import churn, generate, generated_qa
from tasks.core.config import load_params
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout, write_jsonl
from tasks.kb import stages
from tasks.kb.embedder import resolve_model_path
from tasks.pipeline import stage_names

REPO = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
QUESTIONS = 500  # generated QA rows scored on each system's index after the full refresh
STAGES = stage_names("kb", optional=False)  # the refresh report times these


def bench_env(home: Path) -> dict:
    """A clean environment: offline, its own Prefect home, no server from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QDRANT_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        GX_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(home / ".prefect"),
        PYTHONPATH=str(REPO),
    )
    return env


def new_project(path: Path) -> Path:
    """A throwaway ragtune project: the repository's params.yaml and nothing else."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", path / "params.yaml")
    return path


def timed_process(cmd: list[str], home: Path, cwd: Path, what: str) -> tuple[float, str]:
    """Run one measured process in bench_env(home); (wall seconds, stdout), or its stderr tail on failure."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=bench_env(home), cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def ragtune_cli() -> list[str]:
    exe = Path(sys.executable).with_name("ragtune")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from flows.cli import main; main()"]


# The peers and the bare script write dense vectors only; ragtune's BM25 sparse vectors (index.sparse) are
# off here so that every system does the same work.
DENSE_ONLY = ["index.sparse=false"]


def run_ragtune(project: Path, corpus: Path, overrides: list[str] = ()) -> dict:
    """`ragtune refresh --json` in a subprocess; wall time plus the per-stage seconds of its report."""
    cmd = [
        *ragtune_cli(),
        "refresh",
        "--params",
        str(project / "params.yaml"),
        "--source",
        str(corpus),
        "--json",
        "index.max_delete_share=1.0",
        *DENSE_ONLY,
        *overrides,
    ]
    wall, stdout = timed_process(cmd, project, project, "ragtune refresh")
    report = json.loads(stdout)
    stages = {s: report["seconds"][s] for s in STAGES}
    return {
        "wall_seconds": round(wall, 2),
        "flow_seconds": report["seconds"]["total"],
        "stage_seconds": stages,
        "work_seconds": round(sum(stages.values()), 2),
        "documents": sum(v for k, v in report["documents"].items() if k != "dropped"),
        "chunks": report["chunks"]["total"],
        "embedded": report["chunks"]["embedded"],
        "points": report["points"]["in_index"],
        "doc_changes": report["documents"],
        "embed_chunks_per_s": report["embed_chunks_per_s"],
        "index_points_per_s": report["index_points_per_s"],
    }


def embed_batch() -> int:
    """ragtune's embed.batch_size: the peers and the bare script encode with the same batch (same settings)."""
    return load_params(REPO / "params.yaml").embed.batch_size


def run_peer(peer: str, corpus: Path, state: Path, size: int, overlap: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        peer,
        "--corpus",
        str(corpus),
        "--state",
        str(state),
        "--chunk-size",
        str(size),
        "--overlap",
        str(overlap),
        "--batch-size",
        str(embed_batch()),
    ]
    wall, stdout = timed_process(cmd, state, REPO, peer)
    out = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_seconds": round(wall, 2), "work_seconds": out["run_seconds"], **out}


def peer_available(peer: str) -> str | None:
    """None when the peer's packages import, else why not (they are optional: pip install -e '.[bench]')."""
    import importlib.util

    mods = {
        "llamaindex": ["llama_index.core", "llama_index.vector_stores.qdrant"],
        "langchain": ["langchain_classic", "langchain_qdrant", "langchain_text_splitters"],
    }[peer]
    missing = [
        m for m in mods if importlib.util.find_spec(m.split(".")[0]) is None or importlib.util.find_spec(m) is None
    ]
    return (
        f"not installed ({', '.join(missing)}); install with: pip install -c constraints.txt -e '.[bench]'"
        if missing
        else None
    )


def refresh_scenarios(work: Path, n_docs: int, seed: int, size: int, overlap: int, log) -> dict:
    """Full refresh, unchanged re-run and 1% churn re-run for ragtune and each installed peer; recall@5 of each
    system's index after the full run (generated questions), then a cold run of each on the sample corpus."""
    corpus = work / "corpus"
    stats = generate(corpus, n_docs, seed)
    qa = generated_qa(corpus, QUESTIONS, seed)
    systems: dict[str, dict] = {"ragtune": {}}
    runners = {"ragtune": lambda scenario: run_ragtune(work / "ragtune", corpus)}
    stores = {"ragtune": work / "ragtune"}
    new_project(work / "ragtune")
    for peer in ("llamaindex", "langchain"):
        why = peer_available(peer)
        if why:
            systems[peer] = {"status": "skipped", "reason": why}
            continue
        systems[peer] = {}
        runners[peer] = lambda scenario, p=peer: run_peer(p, corpus, work / p, size, overlap)
        stores[peer] = work / peer
    torch_run: dict = {}
    for scenario in ("full", "unchanged", "churn_1pct"):
        if scenario == "unchanged":  # the bare baseline and the efficiency runs use the full run's chunks
            shutil.copy(work / "ragtune/data/chunks/chunks.jsonl", work / "full_chunks.jsonl")
            torch_run = same_encoder_run(work / "ragtune-torch", corpus, qa, log)  # on the same corpus
        if scenario == "churn_1pct":
            stats["churn"] = churn(corpus, 0.01, seed + 1)
        for name, run in runners.items():
            log(f"refresh {scenario}: {name}")
            try:
                systems[name][scenario] = run(scenario)
                if scenario == "full":
                    log(f"recall@5 of {name} on {len(qa)} generated questions")
                    systems[name]["retrieval_generated"] = score_index(name, stores[name], qa)
            except Exception as exc:  # one broken peer must not sink the whole benchmark
                systems[name] = {"status": "error", "error": str(exc)[-2000:]}
                runners = {k: v for k, v in runners.items() if k != name}
                break
    for res in systems.values():
        if "full" in res and "status" not in res:
            full = res["full"]["wall_seconds"]
            for scenario in ("unchanged", "churn_1pct"):
                if scenario in res:
                    res[scenario]["wall_fraction_of_full"] = round(res[scenario]["wall_seconds"] / full, 3)
            res["status"] = "ok"
    small = small_corpus(work / "small", [n for n in runners], size, overlap, log)
    return {
        "corpus": stats,
        "chunk_size_tokens": size,
        "overlap_tokens": overlap,
        "encode_batch": embed_batch(),
        "generated_questions": len(qa),
        "systems": systems,
        "ragtune_torch_full": torch_run,
        "small_corpus": small,
        "chunks_file": str(work / "full_chunks.jsonl"),
    }


def same_encoder_run(project: Path, corpus: Path, qa: list[dict], log) -> dict:
    """ragtune's full refresh with embed.backend=torch: the encoder the peers and the bare script use."""
    log("refresh full: ragtune with embed.backend=torch")
    res = run_ragtune(new_project(project), corpus, ["embed.backend=torch"])
    res["retrieval_generated"] = score_index("ragtune", project, qa, overrides=["embed.backend=torch"])
    return res


def small_corpus(work: Path, names: list[str], size: int, overlap: int, log) -> dict:
    """Each system's cold run (new project or state) on the shipped sample corpus, and recall@5 on its QA set.

    The peers read markdown and text files only, so every system gets those (the PDF and HTML documents stay out)
    and the questions about them are not asked."""
    from tasks.core.qa import read_qa_set

    corpus = work / "corpus"
    for path in sorted((REPO / "data/sample/corpus").rglob("*")):
        if path.suffix in (".md", ".txt"):
            target = corpus / path.relative_to(REPO / "data/sample/corpus")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    rows = [
        {**row, "doc_ids": []}  # scored by answer strings: each system names documents its own way
        for row in read_qa_set(REPO / "data/sample/questions.jsonl")
        if all(d.endswith((".md", ".txt")) for d in row["doc_ids"])
    ]
    out: dict[str, dict] = {"documents": sum(1 for p in corpus.rglob("*") if p.is_file()), "questions": len(rows)}
    for name in names:
        log(f"small corpus: {name}")
        if name == "ragtune":
            res = run_ragtune(new_project(work / name), corpus)
        else:
            res = run_peer(name, corpus, work / name, size, overlap)
        out[name] = {"wall_seconds": res["wall_seconds"], "retrieval": score_index(name, work / name, rows)}
    return out


def score_index(system: str, where: Path, rows: list[dict], k: int = 5, overrides: list[str] = ()) -> dict:
    """recall@k and MRR@k of a system's index, each question embedded with the same model (normalized) and
    scored as eval-retrieval scores it: a hit is a chunk holding one of the row's answer strings."""
    from tasks.kb.retrieval_eval import score_row

    if system == "ragtune":
        from tasks.kb.retrieval import Retriever, without_query_cache

        params = without_query_cache(load_params(where / "params.yaml", [*DENSE_ONLY, *overrides]))
        with Retriever(where, params, "dense") as retriever:
            ranked = [retriever.search(row["question"], k) for row in rows]
    else:
        ranked = peer_search(where / "qdrant", [row["question"] for row in rows], k)
    recall = mrr = 0.0
    for hits, row in zip(ranked, rows):
        r, rr = score_row(hits, row, k)
        recall, mrr = recall + r, mrr + rr
    return {
        "questions": len(rows),
        f"recall_at_{k}": round(recall / len(rows), 4),
        f"mrr_at_{k}": round(mrr / len(rows), 4),
    }


def peer_search(path: Path, questions: list[str], k: int) -> list[list[dict]]:
    """Top-k texts from a peer's local Qdrant collection (LangChain keeps `page_content`, LlamaIndex the node JSON)."""
    from qdrant_client import QdrantClient
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model_path(MODEL), device="cpu")
    vectors = model.encode(questions, batch_size=embed_batch(), normalize_embeddings=True, show_progress_bar=False)
    client = QdrantClient(path=str(path))
    try:
        out = []
        for vec in vectors:
            points = client.query_points("bench", query=vec.tolist(), limit=k, with_payload=True).points
            out.append([{"text": _peer_text(p.payload or {})} for p in points])
        return out
    finally:
        client.close()


def _peer_text(payload: dict) -> str:
    if "page_content" in payload:
        return payload["page_content"]
    return json.loads(payload.get("_node_content") or "{}").get("text", "")


def bare_refresh(chunks: list[dict], qdrant_path: Path, batch_size: int, points_batch: int) -> dict:
    """The minimal script: sentence-transformers `encode` on ragtune's chunks, qdrant-client `upload_points`."""
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(resolve_model_path(MODEL), device="cpu")
    load = time.perf_counter() - t0
    texts = [c["text"] for c in chunks]
    t0 = time.perf_counter()
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    encode = time.perf_counter() - t0
    upload = bare_upload(chunks, vectors, qdrant_path, points_batch)
    return {
        "model_load_seconds": round(load, 3),
        "encode_seconds": round(encode, 3),
        "chunks_per_s": round(len(texts) / encode, 1),
        **upload,
    }


def bare_upload(chunks: list[dict], vectors, path: Path, points_batch: int) -> dict:
    """upload_points of the same ids, vectors and payload into a new local collection."""
    from qdrant_client import QdrantClient, models

    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    client = QdrantClient(path=str(path))
    client.create_collection(
        "bare", vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
    )
    points = [
        models.PointStruct(id=c["point_id"], vector=v.tolist(), payload=_payload(c)) for c, v in zip(chunks, vectors)
    ]
    t1 = time.perf_counter()
    client.upload_points("bare", points, batch_size=points_batch, wait=True)
    upload = time.perf_counter() - t1
    count = client.count("bare", exact=True).count
    client.close()
    total = time.perf_counter() - t0
    return {
        "points": count,
        "upload_seconds": round(upload, 3),
        "points_per_s": round(count / upload, 1),
        "upload_total_seconds": round(total, 3),
    }


def _payload(c: dict) -> dict:
    keys = ("doc_id", "source", "path", "position", "heading_path", "text", "chunk_hash", "doc_hash")
    return {k: c[k] for k in keys}


def stage_efficiency(chunks: list[dict], work: Path, repeats: int, log) -> dict:
    """ragtune's embed and index stage functions vs the bare calls, alternating, best of `repeats` each.

    Embed: the stage starts from an empty embedding cache (every chunk encoded); both sides load the model
    inside the timed span. Index: each round writes into a new local collection; the stage's span includes
    opening the store, scanning it, planning, upserting with acknowledgement and writing the manifest.
    """
    project = new_project(work / "efficiency")
    ws = Layout(project)
    write_jsonl(ws.chunks, chunks)
    runs: dict[str, list[dict]] = {"ragtune_embed": [], "bare_embed": [], "ragtune_index": [], "bare_index": []}
    bare_refresh(chunks[:8], work / "bare-qdrant", 64, 256)  # warm the file cache and torch kernels for both sides
    for r in range(repeats):
        log(f"efficiency round {r + 1}/{repeats}")
        overrides = [f"index.local_path=data/qdrant-{r}", "embed.backend=torch", *DENSE_ONLY]  # the bare encoder
        params = load_params(project / "params.yaml", overrides)
        shutil.rmtree(ws.embedding_cache.parent, ignore_errors=True)
        runs["ragtune_embed"].append(stages.run_embed(StageContext(ws, params)))
        bare = bare_refresh(chunks, work / "bare-qdrant", params.embed.batch_size, params.index.batch_size)
        runs["bare_embed"].append(bare)
        runs["ragtune_index"].append(stages.run_index(StageContext(ws, params)))
        runs["bare_index"].append(bare)
    n = len(chunks)
    best = {k: min(v, key=lambda x: x.get("seconds", x.get("encode_seconds"))) for k, v in runs.items()}
    re, be = best["ragtune_embed"], min(runs["bare_embed"], key=lambda x: x["model_load_seconds"] + x["encode_seconds"])
    ri, bi = best["ragtune_index"], max(runs["bare_index"], key=lambda x: x["points_per_s"])
    embed_stage_rate = n / re["seconds"]
    bare_embed_rate = n / (be["model_load_seconds"] + be["encode_seconds"])
    index_stage_rate = ri["points_written"] / ri["seconds"]
    bare_index_rate = bi["points"] / bi["upload_total_seconds"]
    return {
        "chunks": n,
        "repeats": repeats,
        "embed": {
            "ragtune_stage_chunks_per_s": round(embed_stage_rate, 1),
            "bare_load_plus_encode_chunks_per_s": round(bare_embed_rate, 1),
            "efficiency_stage": round(embed_stage_rate / bare_embed_rate, 3),
            "ragtune_encode_loop_chunks_per_s": re["chunks_per_s"],
            "bare_encode_chunks_per_s": max(x["chunks_per_s"] for x in runs["bare_embed"]),
            "efficiency_encode_loop": round(re["chunks_per_s"] / max(x["chunks_per_s"] for x in runs["bare_embed"]), 3),
            "all_stage_seconds": [x["seconds"] for x in runs["ragtune_embed"]],
            "all_bare_seconds": [round(x["model_load_seconds"] + x["encode_seconds"], 3) for x in runs["bare_embed"]],
        },
        "index": {
            "ragtune_stage_points_per_s": round(index_stage_rate, 1),
            "bare_open_create_upload_points_per_s": round(bare_index_rate, 1),
            "efficiency_stage": round(index_stage_rate / bare_index_rate, 3),
            "ragtune_upsert_loop_points_per_s": ri["points_per_s"],
            "bare_upload_points_per_s": bi["points_per_s"],
            "efficiency_upsert_loop": round(ri["points_per_s"] / bi["points_per_s"], 3),
            "all_stage_seconds": [x["seconds"] for x in runs["ragtune_index"]],
            "all_bare_seconds": [x["upload_total_seconds"] for x in runs["bare_index"]],
        },
    }


def run_bare(chunks_file: Path, work: Path) -> dict:
    """benchmarks/bare.py as its own process: the minimal script doing the embed + index job."""
    cmd = [sys.executable, "-m", "benchmarks.bare", "--chunks", str(chunks_file), "--qdrant", str(work / "bare-script")]
    cmd += ["--batch-size", str(embed_batch())]
    wall, stdout = timed_process(cmd, work, REPO, "bare script")
    return {"wall_seconds": round(wall, 2), **json.loads(stdout.strip().splitlines()[-1])}


def orchestration_overhead(work: Path, runs_each: tuple[int, int], log) -> dict:
    """`ragtune refresh` of a 1-document corpus: wall and flow time minus the stages' own work.

    Without a server each CLI run starts Prefect's ephemeral server; the first run in a new project also
    creates its SQLite database. The steady state (document edited, so every stage does real work) is the
    fixed cost of a scheduled run; the same is then measured against a running `ragtune server`.
    """
    corpus = work / "one-doc"
    corpus.mkdir(parents=True, exist_ok=True)
    project = new_project(work / "overhead")
    runs = _overhead_runs(project, corpus, "ephemeral", runs_each[0], log)
    server = _start_server(project)
    try:
        with_server = _overhead_runs(project, corpus, "server", runs_each[1], log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "first_run_new_project": runs[0],
        "steady_state": min(runs[1:], key=lambda r: r["wall_seconds"]),
        "with_running_server": min(with_server, key=lambda r: r["wall_seconds"]),
        "runs": runs + with_server,
    }


def _overhead_runs(project: Path, corpus: Path, label: str, n: int, log) -> list[dict]:
    runs = []
    for i in range(n):
        (corpus / "note.md").write_text(
            f"# Note\n\nOverhead probe {label} {i}: the thermostat reports hourly.\n", encoding="utf-8"
        )
        log(f"overhead {label} run {i + 1}/{n}")
        res = run_ragtune(project, corpus)
        runs.append(
            {
                "prefect": label,
                "wall_seconds": res["wall_seconds"],
                "flow_seconds": res["flow_seconds"],
                "stage_work_seconds": res["work_seconds"],
                "process_overhead_seconds": round(res["wall_seconds"] - res["work_seconds"], 2),
                "flow_overhead_seconds": round(res["flow_seconds"] - res["work_seconds"], 2),
                "stage_seconds": res["stage_seconds"],
            }
        )
    return runs


def _start_server(project: Path) -> subprocess.Popen:
    """`ragtune server` on a free port; the CLI finds it through the project's Prefect home."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_file = (project / "server.log").open("w")
    proc = subprocess.Popen(
        [*ragtune_cli(), "server", "--port", str(port), "--params", str(project / "params.yaml")],
        env=bench_env(project),
        cwd=project,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError(f"ragtune server did not answer within 180 s; see {project / 'server.log'}")
