"""The knowledge-base stages: read inputs from the workspace, run the pure logic, write outputs.

`ragtune stage NAME` (what dvc.yaml runs) and the Prefect tasks in flows/ both call these through the stage
registry (tasks/pipeline.py), so `dvc repro` and `ragtune refresh` produce the same files and the same index.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace

import numpy as np

from tasks.core.clock import utc_stamp
from tasks.core.config import IndexParams, Params, resolve_path
from tasks.core.errors import GateFailed, RagtuneError
from tasks.core.qa import read_qa_set
from tasks.core.stage import PROJECT, Stage, StageContext, finish_stage, rel
from tasks.core.workspace import (
    Layout,
    file_digest,
    file_lock,
    iter_jsonl,
    read_json,
    read_jsonl,
    read_npy,
    write_json,
    write_jsonl,
)
from tasks.kb.chunk import chunk_documents, chunker_key, doc_key
from tasks.kb.clean import clean_documents
from tasks.kb.embed import EmbeddingCache, MapShards, embed_chunks, embed_chunks_sharded
from tasks.kb.embedder import embed_key, load_embedding_tokenizer, make_embedder
from tasks.kb.index import (
    PAYLOAD_FIELDS,
    Plan,
    apply_plan,
    check_mass_delete,
    plan_reconcile,
    vector_kinds,
    verify_index,
)
from tasks.kb.ingest import ingest_sources, to_record
from tasks.kb.retrieval_eval import evaluate_modes, gate
from tasks.kb.store import open_store
from tasks.kb.validate import build_tables, run_gate
from tasks.kb.vectors import VectorStore

log = logging.getLogger("ragtune")


WEB_LOG = ("outcomes", "requests", "not_modified")


def run_ingest(ctx: StageContext) -> dict:
    ws, params, on_progress = ctx.ws, ctx.params, ctx.on_progress
    start = time.perf_counter()

    docs, stats = ingest_sources(ws.root, params.ingest, on_progress, ws.web_state)
    write_jsonl(ws.raw_documents, (to_record(d) for d in docs))
    finish_stage(ws, "ingest", stats, start)
    log.info("ingest: %d documents from %d files %s", stats["documents"], stats["files"], stats["by_status"])
    if "web" in stats:
        log.info("ingest: web %s, %d requests (%d answered 304)", *(stats["web"][k] for k in WEB_LOG))
    for p in stats.get("web_problems", []):
        log.warning("ingest: %s %s: %s", p["url"], p["outcome"], p["reason"])
    for source in stats.get("web", {}).get("truncated_at_max_pages", []):
        log.warning("ingest: %s stopped at ingest.web.max_pages=%d URLs", source, params.ingest.web.max_pages)
    return stats


def run_clean(ctx: StageContext) -> dict:
    ws, params = ctx.ws, ctx.params
    start = time.perf_counter()

    kept, drops, stats = clean_documents(read_jsonl(ws.raw_documents, "ingest"), params.clean)
    write_jsonl(ws.clean_documents, (asdict(d) for d in kept))
    write_jsonl(ws.clean_drops, (asdict(d) for d in drops))
    stats["drops"] = [asdict(d) for d in drops]
    finish_stage(ws, "clean", stats, start)
    log.info("clean: kept %d of %d, dropped %s", stats["kept"], stats["input"], stats["dropped"])
    return stats


def run_validate(ctx: StageContext) -> dict:
    """Run the GX gate; on failure the report is still written, then GateFailed stops the pipeline."""
    ws, params = ctx.ws, ctx.params
    start = time.perf_counter()

    documents, inputs = build_tables(read_jsonl(ws.clean_documents, "clean"), read_jsonl(ws.clean_drops, "clean"))
    report = run_gate(documents, inputs, params.validate_, ws.gx_root)
    write_json(ws.quality_report, report)
    summary = {
        k: report[k]
        for k in ("success", "evaluated", "documents", "inputs", "shares", "failed", "data_docs", "seconds")
    }
    finish_stage(ws, "validate", summary, start)
    if not report["success"]:
        raise GateFailed(
            f"data quality gate failed ({len(report['failed'])} of {report['evaluated']} expectations); nothing "
            "was chunked, embedded or indexed:\n  - "
            + "\n  - ".join(report["failed"])
            + f"\nReport: {ws.quality_report}\nData Docs: {report['data_docs']}\n"
            "Fix the source data, or loosen the thresholds in the validate: section of params.yaml."
        )
    log.info("validate: %d expectations passed; Data Docs at %s", report["evaluated"], report["data_docs"])
    return summary


def run_chunk(ctx: StageContext) -> dict:
    ws, params, on_progress = ctx.ws, ctx.params, ctx.on_progress
    start = time.perf_counter()

    quality = read_json(ws.quality_report, "validate")
    if not quality.get("success"):
        raise GateFailed(f"{ws.quality_report}: the last quality gate failed; fix the data and re-run validate.")
    tokenizer, max_tokens = load_embedding_tokenizer(params.embed.model)
    key = chunker_key(tokenizer, params.chunk)
    chunks, stats = chunk_documents(
        read_jsonl(ws.clean_documents, "clean"),
        tokenizer,
        params.chunk,
        max_tokens,
        on_progress,
        previous_chunks(ws, key),
    )
    ws.chunk_state.unlink(missing_ok=True)  # never describes a chunks file it was not written for
    write_jsonl(ws.chunks, (asdict(c) for c in chunks))
    write_json(ws.chunk_state, {"chunker_key": key, "sha256": file_digest(ws.chunks)})
    finish_stage(ws, "chunk", stats, start)
    log.info(
        "chunk: %d chunks from %d documents (%d unchanged documents reused, mean %s tokens)",
        stats["chunks"],
        stats["documents"],
        stats["documents_reused"],
        stats["tokens_mean"],
    )
    return stats


def previous_chunks(ws: Layout, key: str) -> dict[tuple, list[dict]]:
    """The last run's chunks by document, if that run used the same chunker and its file is intact."""
    if not ws.chunks.exists() or not ws.chunk_state.exists():
        return {}
    try:
        state = read_json(ws.chunk_state, "chunk")
    except (RagtuneError, ValueError):  # a damaged state file only costs a full re-split
        return {}
    if state.get("chunker_key") != key or state.get("sha256") != file_digest(ws.chunks):
        return {}
    by_doc: dict[tuple, list[dict]] = {}
    for c in read_jsonl(ws.chunks, "chunk"):
        by_doc.setdefault(doc_key(c["doc_id"], c["doc_hash"], c["source"], c["path"]), []).append(c)
    return by_doc


def run_embed(ctx: StageContext, map_shards: MapShards | None = None) -> dict:
    """Embed the chunks. `map_shards` (the flow's Prefect map on Dask, when embed.workers > 1 or embed.dask_address
    is set) encodes the cache misses in shards; without it, as under `ragtune stage embed`, this process does."""
    ws, params, on_progress = ctx.ws, ctx.params, ctx.on_progress
    start = time.perf_counter()

    chunks = iter_jsonl(ws.chunks, "chunk")  # streamed: the stage never holds the corpus
    p = params.embed
    cache = EmbeddingCache(ws.embedding_cache)
    key = embed_key(p)
    if map_shards:
        stats = embed_chunks_sharded(
            chunks, map_shards, cache, key, ws.vectors, p.batch_size, p.shard_size, p.workers, on_progress
        )
    else:
        if p.workers > 1 or p.dask_address:
            log.info("embed: embed.workers and embed.dask_address apply to `ragtune refresh`; this run encodes here")
        stats = embed_chunks(
            chunks,
            lambda: make_embedder(p),
            cache,
            key,
            ws.vectors,
            on_progress,
        )
    write_json(ws.vector_ids, [c["point_id"] for c in iter_jsonl(ws.chunks, "chunk")])
    stats["model"], stats["model_key"] = p.model, key
    finish_stage(ws, "embed", stats, start, release=True)
    log.info("embed: %d embedded, %d reused from cache", stats["embedded"], stats["reused"])
    return stats


def run_index(ctx: StageContext) -> dict:
    """Reconcile the index with the chunks and stage it; write the manifest. The guard runs before any write.
    One writer per collection: a second run refuses at once (the lock dies with its process)."""
    ws, params = ctx.ws, ctx.params
    start = time.perf_counter()
    vectors = read_npy(ws.vectors, "embed")
    ids = read_json(ws.vector_ids, "embed")
    if ids != [c["point_id"] for c in iter_jsonl(ws.chunks, "chunk")]:
        raise RagtuneError(f"{ws.vectors} was computed for other chunks than {ws.chunks}; run the embed stage again.")
    embed_stats = read_json(ws.stage_metrics("embed"), "embed")
    run_version = utc_stamp()  # the run's one id: points carry it, the report shows it, the kb tag is kb/<it>
    with index_lock(ws, params):
        return _index_locked(ctx, vectors, embed_stats, run_version, start)


@contextlib.contextmanager
def index_lock(ws: Layout, params: Params) -> Iterator[None]:
    """Index, publish and rollback write the collection's pointers: one at a time, and a second one refuses."""
    lock = ws.index_lock(params.index.collection)
    busy = (
        f"another refresh is writing collection '{params.index.collection}' (or publishing or rolling it back; lock "
        f"{lock}); this run refuses rather than write the index from two runs. Run again when it has finished."
    )
    with file_lock(lock, 0, busy):
        yield


@contextlib.contextmanager
def index_writer(ws: Layout, params: Params) -> Iterator[VectorStore]:
    """The collection's writer, under its index lock (publish and rollback; index holds the lock longer)."""
    with index_lock(ws, params):
        store = open_store(ws.root, params.index, writer=True)
        try:
            yield store
        finally:
            store.close()


def fingerprint(ws: Layout, params: Params, embed_stats: dict, dim: int) -> dict:
    """What this run's vectors depend on: a serving index with another fingerprint is rebuilt, not updated."""
    state = read_json(ws.chunk_state, "chunk") if ws.chunk_state.exists() else {}
    return {
        "dim": dim,
        "distance": params.index.distance,
        "sparse": params.index.sparse,
        "model": embed_stats.get("model_key", embed_stats["model"]),
        "embed_model": params.embed.model,  # for messages (rollback); "model" is the key that decides
        "chunking": state.get("chunker_key", f"{params.chunk.size_tokens}/{params.chunk.overlap_tokens}"),
    }


def _index_locked(ctx: StageContext, vectors: np.ndarray, embed_stats: dict, run_version: str, start: float) -> dict:
    ws, params, on_progress = ctx.ws, ctx.params, ctx.on_progress

    def chunks() -> Iterator[dict]:  # streamed on each pass (plan, points, manifest): never held as a list
        return iter_jsonl(ws.chunks, "chunk")

    store = open_store(ws.root, params.index, writer=True)
    try:
        dim = int(vectors.shape[1]) if vectors.ndim == 2 and len(vectors) else embed_stats["dim"]
        rebuild = store.ensure_collection(fingerprint(ws, params, embed_stats, dim), run_version, ctx.rebuild)
        plan = plan_reconcile(chunks(), store.scan(PAYLOAD_FIELDS), vector_kinds(params.index.sparse))
        log.info(
            "index plan: %d added, %d changed, %d repaired, %d unchanged, %d removed documents",
            len(plan.added),
            len(plan.changed),
            len(plan.repaired),
            len(plan.unchanged),
            len(plan.removed),
        )
        # One step more than the writes: staging (the embedded store's HNSW build, minutes at a million points,
        # with no finer progress from the engine), so the row never shows done while the graph is still building.
        writing = (lambda done, total: on_progress(done, total + 1)) if on_progress else None
        writes = apply_plan(
            store,
            rebuild_all(plan, chunks(), params.index, ctx.allow_mass_delete, store.location) if rebuild else plan,
            chunks(),
            vectors,
            params.index,
            run_version,
            embed_stats["model"],
            ctx.allow_mass_delete,
            writing,
        )
        writes.update(store.commit())  # staged: verify and the recall gate read it, publish serves it
        if on_progress:
            steps = writes["points_written"] + writes["points_deleted"] + 1
            on_progress(steps, steps)
        # as configured, not resolved: the manifest is a DVC output and must not differ between machines
        location = "qdrant-server" if store.is_server else f"local:{params.index.local_path}"
    finally:
        store.close()
    write_json(ws.index_manifest, manifest(chunks(), params, embed_stats, location))
    stats = {
        "documents": {
            "added": len(plan.added),
            "changed": len(plan.changed),
            "repaired": len(plan.repaired),
            "unchanged": len(plan.unchanged),
            "removed": len(plan.removed),
        },
        "removed_ids": plan.removed,
        "repaired_ids": plan.repaired,
        "rebuild": rebuild,
        "server": store.is_server,
        **writes,
        "run_version": run_version,
    }
    finish_stage(ws, "index", stats, start)
    return stats


def run_verify(ctx: StageContext) -> dict:
    """The index this run staged (or, when it wrote nothing new, the serving one) holds exactly the manifest's
    points (count + a sample of ids)."""
    ws, params = ctx.ws, ctx.params

    start = time.perf_counter()
    expected = [pid for doc in read_json(ws.index_manifest, "index")["docs"].values() for pid in doc["points"]]
    run_version, staged = staged_by(ws)
    store = open_store(ws.root, params.index, staged=staged)
    try:
        stats = {**verify_index(store, expected, params.index.verify_sample), "run_version": run_version}
    finally:
        store.close()
    finish_stage(ws, "verify", stats, start)
    log.info("verify: %d points, %d sampled ids present", stats["points"], stats["sampled"])
    return stats


def staged_by(ws: Layout) -> tuple[str, str | None]:
    """The last index run's version, and the same again if it staged an index (None: it wrote nothing new, or
    updated a server's collection in place, so the serving index is the one to check)."""
    index = read_json(ws.stage_metrics("index"), "index")
    return index["run_version"], index["run_version"] if index.get("staged") else None


def run_eval_retrieval(ctx: StageContext) -> dict:
    """Optional gate before serving: recall@top_k on retrieve.qa_file, read from the staged index, must not fall
    more than retrieve.max_recall_drop below the last passing run's. A failing run keeps the old baseline, so
    repeated drops cannot creep in, and publish does not run: the serving index stays."""
    ws, params = ctx.ws, ctx.params

    start = time.perf_counter()
    p = params.retrieve
    last = (
        read_json(ws.stage_metrics("eval_retrieval"), "eval_retrieval")
        if ws.stage_metrics("eval_retrieval").exists()
        else {}
    )
    baseline = last if last.get("passed") else last.get("baseline")
    run_version, staged = staged_by(ws)
    if not p.qa_file:
        skipped = {"skipped": "retrieve.qa_file is not set", "run_version": run_version, "baseline": baseline}
        return finish_stage(ws, "eval_retrieval", skipped, start)
    qa_path = resolve_path(ws.root, p.qa_file)
    rows = read_qa_set(qa_path, "retrieve.qa_file")
    result = evaluate_modes(ws.root, params, rows, [p.mode], p.top_k, staged=staged)[0]
    result.update(qa_file=p.qa_file, qa_sha256=file_digest(qa_path), run_version=run_version)
    passed, reason = gate(result, baseline, p.max_recall_drop)
    stats = {
        **result,
        "passed": passed,
        "reason": reason,
        "baseline": {k: v for k, v in baseline.items() if k != "baseline"} if baseline else None,
    }
    finish_stage(ws, "eval_retrieval", stats, start, release=True)
    if not passed:
        if staged:
            where = (
                "The serving index was not changed: readers still get the previous one, and this run's index "
                "stays staged, unserved, until the next refresh replaces it"
            )
        elif read_json(ws.stage_metrics("index"), "index").get("server"):
            where = (
                "This run updated the server's collection in place (only a rebuild is built beside it), so "
                "readers already see its data"
            )
        else:
            where = "This run wrote nothing new: the index evaluated is the one serving"
        raise GateFailed(
            f"retrieval gate failed on {p.qa_file}: {reason}. {where}; the run is not recorded as a version. "
            f"Questions that found nothing: {result['missed'][:5]}. Check what changed in the sources "
            "(`ragtune eval-retrieval --qa FILE` shows every question), or raise retrieve.max_recall_drop if the "
            "drop is expected."
        )
    log.info("eval_retrieval: %s", reason)
    return stats


def run_publish(ctx: StageContext) -> dict:
    """Serve what the index stage staged, once verify and the recall gate passed on it: one atomic switch."""
    ws, params = ctx.ws, ctx.params
    start = time.perf_counter()
    run_version = read_json(ws.stage_metrics("index"), "index")["run_version"]
    check_gates(ws, run_version, recall_gate=bool(params.retrieve.qa_file))
    with index_writer(ws, params) as store:
        stats = store.publish(run_version)
    stats["run_version"] = run_version
    finish_stage(ws, "publish", stats, start)
    if stats["published"]:
        log.info("publish: %s serves (previous %s kept for rollback)", stats["serving"], stats.get("previous"))
    return stats


def check_gates(ws: Layout, run_version: str, recall_gate: bool) -> None:
    """Publish serves only what verify and the recall gate (when retrieve.qa_file sets one) passed, for this very
    index run."""
    gates = (("verify", "ok"), ("eval_retrieval", "passed")) if recall_gate else (("verify", "ok"),)
    for stage, passed in gates:
        path = ws.stage_metrics(stage)
        result = read_json(path, stage) if path.exists() else {}
        if result.get("run_version") != run_version or not result.get(passed):
            raise GateFailed(
                f"publish: {stage} has not passed on the index of run {run_version} ({path}: "
                f"{'run ' + str(result.get('run_version')) if result else 'missing'}, "
                f"{passed}={result.get(passed)}). Run `ragtune stage {stage}` first; nothing was published."
            )


def rollback_index(ws: Layout, params: Params) -> dict:
    """`ragtune rollback`: serve the previous index again (a second rollback returns to the one just left)."""
    model_key = embed_key(params.embed)
    with index_writer(ws, params) as store:
        return store.rollback(model_key)


def rebuild_all(plan: Plan, chunks: Iterable[dict], params: IndexParams, allow: bool, location: str) -> Plan:
    """A rebuild writes every chunk into an empty index; the guard still weighs what would vanish from the serving
    one (the plan against it), so an unmounted source cannot publish an empty index."""
    check_mass_delete(plan, params, allow, location)
    ids = [c["point_id"] for c in chunks]
    return replace(plan, upsert_ids=ids, delete_ids=[], store_points=0)


def manifest(chunks: Iterable[dict], params: Params, embed_stats: dict, location: str) -> dict:
    """What the index should hold: deterministic, so DVC versions it and `dvc diff` shows real changes."""
    docs: dict[str, dict] = {}
    for c in chunks:
        d = docs.setdefault(
            c["doc_id"], {"doc_hash": c["doc_hash"], "source": c["source"], "path": c["path"], "points": []}
        )
        d["points"].append(c["point_id"])
    return {
        "collection": params.index.collection,
        "store": location,
        "distance": params.index.distance,
        "model": embed_stats["model"],
        "dim": embed_stats["dim"],
        "chunks": sum(len(d["points"]) for d in docs.values()),
        "documents": len(docs),
        "docs": docs,
    }


L = PROJECT
STORE_CONNECTION = (
    "index.collection",
    "index.engine",
    "index.local_path",
    "index.timeout_s",
    "index.retries",
    "index.retry_backoff_s",
)
STAGES = (
    Stage(
        "ingest",
        "kb",
        run_ingest,
        params=("ingest",),
        source_param="ingest.sources",
        outs=(rel(L.raw_documents),),
    ),
    Stage(
        "clean",
        "kb",
        run_clean,
        params=("clean",),
        deps=(rel(L.raw_documents),),
        outs=(rel(L.clean_documents), rel(L.clean_drops)),
    ),
    Stage(
        "validate",
        "kb",
        run_validate,
        params=("validate",),
        deps=(rel(L.clean_documents), rel(L.clean_drops)),
        outs=(rel(L.gx_project),),
        metrics=(rel(L.quality_report),),
    ),
    Stage(
        "chunk",
        "kb",
        run_chunk,
        params=("chunk", "embed.model"),
        deps=(rel(L.clean_documents), rel(L.quality_report)),
        outs=(rel(L.chunks),),
    ),
    Stage(
        "embed",
        "kb",
        run_embed,
        params=("embed",),
        deps=(rel(L.chunks),),
        outs=(rel(L.embeddings_dir),),
    ),
    Stage(
        "index",
        "kb",
        run_index,
        params=("index", "chunk", "embed.model", "embed.normalize", "embed.backend"),  # the fingerprint: rebuilds
        deps=(rel(L.chunks), rel(L.embeddings_dir)),
        outs=(rel(L.index_manifest),),
        always_changed=True,
    ),
    Stage(
        "verify",
        "kb",
        run_verify,
        params=(*STORE_CONNECTION[:3], "index.verify_sample", *STORE_CONNECTION[3:]),
        deps=(rel(L.index_manifest),),
        always_changed=True,
    ),
    Stage(
        "eval_retrieval",
        "kb",
        run_eval_retrieval,
        params=("retrieve", "embed", *STORE_CONNECTION),
        deps=(rel(L.index_manifest),),
        optional=True,
        always_changed=True,
    ),
    Stage(
        "publish",
        "kb",
        run_publish,
        params=(*STORE_CONNECTION, "retrieve.qa_file"),  # a QA file turns the recall gate on
        deps=tuple(rel(L.stage_metrics(s)) for s in ("index", "verify", "eval_retrieval")),  # after both gates
        always_changed=True,
    ),
)
