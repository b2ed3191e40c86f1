"""Retrieval modes, the recall gate, ask and compare on real components: Qdrant local mode, the packaged MiniLM,
a tiny Llama with a LoRA adapter trained by the real retrain stages, and the Prefect test server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.compare import compare
from flows.kb_refresh import kb_refresh
from tasks.answer.answerer import Answerer
from tasks.core.config import ANSWER_MODES, ConfigError, load_params
from tasks.core.errors import GateFailed, SourceError
from tasks.core.qa import read_qa_set
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.kb.retrieval import Retriever
from tasks.lm.tiny import build_tiny_model
from tasks.pipeline import run_stage, stage_names
from tests.data import INSTRUCTION_OVERRIDES

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

REPO = Path(__file__).resolve().parents[2]
QA = REPO / "data/sample/questions.jsonl"

# Distractors are about the query's topic in other words; the one document naming the batch code is about
# something else. A sentence embedding ranks by topic; BM25 matches the code exactly.
CODE_CORPUS = {
    "batch-notice.md": "# Power adapters\n\nUnits from production batch ZX-4471-B, shipped in March, came with a "
    "power adapter that runs warm. Order a free replacement adapter from the support portal; keep "
    "the old one until the new one arrives. Adapters from other batches are fine.",
    "upgrade-1.md": "# Upgrades\n\nUpgrading the device software did not complete? Restart the thermostat and retry "
    "the installation from the app.",
    "upgrade-2.md": "# Upgrades\n\nIf a software upgrade stops halfway, keep the device powered and the installer "
    "resumes by itself within ten minutes.",
    "upgrade-3.md": "# Upgrades\n\nSoftware installation errors usually come from a weak Wi-Fi signal; move the router "
    "closer and try the upgrade again.",
    "upgrade-4.md": "# Upgrades\n\nA new software version is installed automatically at night; you can also start "
    "the upgrade manually in settings.",
    "upgrade-5.md": "# Upgrades\n\nWhen the upgrade of the device software breaks, a factory reset restores the "
    "previous version.",
    "upgrade-6.md": "# Upgrades\n\nError E12 after an upgrade means the download was corrupted; the thermostat "
    "fetches the package again.",
    "upgrade-7.md": "# Upgrades\n\nThe upgrade server was down for an hour on Tuesday; devices that could not upgrade "
    "retried automatically.",
}


def index_stages(root: Path, *overrides: str) -> None:
    params = load_params(root / "params.yaml", list(overrides))
    for stage in stage_names("kb"):
        run_stage(stage, StageContext(Layout(root), params))


@pytest.fixture(scope="module")
def code_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("codes")
    params = (REPO / "params.yaml").read_text()  # the PyTorch encoder: the scores these rankings were written against
    assert "backend: openvino-int8" in params
    (root / "params.yaml").write_text(params.replace("backend: openvino-int8", "backend: torch"))
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in CODE_CORPUS.items():
        (corpus / name).write_text(text)
    index_stages(root, f"ingest.sources=[{corpus}]")
    return root


def test_hybrid_finds_a_rare_product_code_that_dense_retrieval_misses(code_index):
    params = load_params(code_index / "params.yaml")
    question = "Why did the firmware update fail on ZX-4471-B?"
    top = {}
    for mode in ("dense", "sparse", "hybrid"):
        with Retriever(code_index, params, mode) as r:
            top[mode] = [h["doc_id"] for h in r.search(question, 2)]
    assert "batch-notice.md" not in top["dense"], top
    assert top["sparse"][0] == "batch-notice.md" and top["hybrid"][0] == "batch-notice.md", top
    assert len(top["hybrid"]) == 2 and top["hybrid"][1] == top["dense"][0], "the dense favourite is fused in"
    assert (code_index / "data/cache/queries.sqlite").exists(), "query embeddings are cached by default"


def test_fusion_methods_and_weights_reach_the_engine(code_index):
    question = "Why did the firmware update fail on ZX-4471-B?"
    ranked = {}
    for name, overrides in {
        "rrf": ["retrieve.fusion=rrf"],
        "sparse x3": ["retrieve.fusion=rrf", "retrieve.sparse_weight=3", "retrieve.rrf_k=1"],  # k=1: 3 beats any rank
        "dense x3": ["retrieve.fusion=rrf", "retrieve.dense_weight=3", "retrieve.rrf_k=1"],
        "dbsf": ["retrieve.fusion=dbsf"],
        "convex sparse": ["retrieve.fusion=convex", "retrieve.convex_alpha=0"],  # the BM25 list's order alone
        "convex dense": ["retrieve.fusion=convex", "retrieve.convex_alpha=1"],
        "convex": [],  # the default
    }.items():
        with Retriever(code_index, load_params(code_index / "params.yaml", overrides)) as r:
            ranked[name] = [h["doc_id"] for h in r.search(question, 3)]
    with Retriever(code_index, load_params(code_index / "params.yaml", ["retrieve.mode=dense"])) as r:
        dense_first = r.search(question, 1)[0]["doc_id"]
    assert ranked["sparse x3"][0] == "batch-notice.md"  # the BM25 favourite
    assert ranked["dense x3"][0] == dense_first != "batch-notice.md", ranked  # weights move the fused order
    assert len(ranked["dbsf"]) == 3 and "batch-notice.md" in ranked["dbsf"], ranked
    assert ranked["convex sparse"][0] == "batch-notice.md" and ranked["convex dense"][0] == dense_first, ranked
    assert len(ranked["convex"]) == 3 and "batch-notice.md" in ranked["convex"], ranked
    with pytest.raises(ConfigError, match="fusion=dbsf takes none"):
        Retriever(
            code_index, load_params(code_index / "params.yaml", ["retrieve.fusion=dbsf", "retrieve.dense_weight=2"])
        )


def test_score_threshold_query_cache_and_cross_encoder_rerank(code_index, tmp_path):

    question = "Why did the firmware update fail on ZX-4471-B?"
    strict = load_params(code_index / "params.yaml", ["retrieve.mode=dense", "retrieve.score_threshold=0.99"])
    with Retriever(code_index, strict) as r:
        assert r.search("a question asked for the first time") == [], "nothing is that similar"
        r.search("a question asked for the first time")
        assert r.cache_hits == 1, "the second identical query reuses its cached embedding"
    reranker = tmp_path / "cross-encoder"
    build_tiny_model(reranker, "cls", REPO, num_labels=1)  # a CrossEncoder is a 1-logit sequence classifier
    params = load_params(code_index / "params.yaml", [f"retrieve.rerank_model={reranker}", "retrieve.candidates=6"])
    with Retriever(code_index, params) as r:
        hits = r.search(question, 3)
    assert len(hits) == 3 and all("retrieval_score" in h for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    with pytest.raises(ConfigError, match="retrieve.mode=hybrid needs BM25 vectors, but index.sparse is false"):
        Retriever(code_index, load_params(code_index / "params.yaml", ["index.sparse=false"]))
    missing = load_params(code_index / "params.yaml", [f"retrieve.rerank_model={tmp_path / 'none'}"])
    with Retriever(code_index, missing) as r, pytest.raises(ConfigError, match="retrieve.rerank_model"):
        r.search(question)


def test_refresh_gate_passes_then_fails_on_a_recall_drop_and_keeps_its_baseline(workspace):
    ws = Layout(workspace)
    with pytest.raises(SourceError, match="retrieve.qa_file: .*missing.jsonl does not exist"):
        kb_refresh(root=str(workspace), overrides=["retrieve.qa_file=missing.jsonl"])
    assert not ws.raw_documents.exists(), "a bad QA file stops the run before any stage"
    gate = ["retrieve.qa_file=" + str(QA)]
    first = kb_refresh(root=str(workspace), overrides=gate)
    ev = json.loads(ws.stage_metrics("eval_retrieval").read_text())
    assert ev["passed"] and ev["recall_at_5"] >= 0.9 and ev["questions"] == 26 and ev["mode"] == "hybrid"
    assert first["retrieval"]["passed"] and first["retrieval"]["recall_at_5"] == ev["recall_at_5"]

    result = CliRunner().invoke(
        app, ["eval-retrieval", "--qa", str(QA), "--mode", "all", "--json", "--params", str(workspace / "params.yaml")]
    )
    assert result.exit_code == 0, result.output
    by_mode = {r["mode"]: r for r in json.loads(result.stdout)}
    assert set(by_mode) == {"dense", "sparse", "hybrid"}
    assert all(r["recall_at_5"] >= 0.9 and r["p95_ms"] >= r["p50_ms"] > 0 for r in by_mode.values())

    for name in ("heron-installation.md", "heron-overview.md", "heron-api.md", "compatibility.html"):
        (workspace / "data/sample/corpus/product" / name).unlink()
    with pytest.raises(GateFailed, match="retrieval gate failed.*recall_at_5 fell from"):
        kb_refresh(root=str(workspace), overrides=gate, allow_mass_delete=True)
    failed = json.loads(ws.stage_metrics("eval_retrieval").read_text())
    assert not failed["passed"] and failed["recall_at_5"] < ev["recall_at_5"] - 0.05
    assert failed["baseline"]["recall_at_5"] == ev["recall_at_5"]
    with pytest.raises(GateFailed):  # the bar stays at the last passing run: drops cannot creep in
        kb_refresh(root=str(workspace), overrides=gate)
    history = ws.refresh_history.read_text().splitlines()
    assert len(history) == 1, "failed runs are not recorded as refreshes"


@pytest.fixture(scope="module")
def answering(tmp_path_factory, tiny_causal) -> tuple[Path, list[str]]:
    """An indexed sample workspace with a promoted LoRA adapter on the tiny Llama (trained by the real stages)."""
    root = tmp_path_factory.mktemp("answering")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    for folder in ("data/sample/corpus", "data/sample/train", "infra/deepspeed"):
        shutil.copytree(REPO / folder, root / folder)
    overrides = [
        f"model.base={tiny_causal}",
        *INSTRUCTION_OVERRIDES,
        "train.deepspeed=none",
        "train.max_steps=8",
        "train.learning_rate=0.005",
    ]
    index_stages(root)
    params = load_params(root / "params.yaml", overrides)
    for stage in stage_names("model"):
        run_stage(stage, StageContext(Layout(root), params))
    return root, overrides


def test_every_mode_answers_and_ft_and_hybrid_load_the_adapter(answering):
    root, overrides = answering
    production = json.loads(Layout(root).production.read_text())["version"]
    answerer = Answerer(root, load_params(root / "params.yaml", overrides))
    try:
        res = {
            mode: answerer.answer("How long does a standard Heron installation take?", mode) for mode in ANSWER_MODES
        }
        from peft import PeftModel

        assert isinstance(answerer.generator("ft").model, PeftModel)
        assert not isinstance(answerer.generator("rag").model, PeftModel)
    finally:
        answerer.close()
    for mode, r in res.items():
        assert isinstance(r["answer"], str) and r["timings_ms"]["generate"] > 0, (mode, r)
        assert r["adapter"] == (production if mode in ("ft", "hybrid") else None), mode
        assert bool(r["sources"]) == (mode in ("rag", "hybrid")), mode
    assert [s["n"] for s in res["hybrid"]["sources"]] == list(range(1, len(res["hybrid"]["sources"]) + 1))
    assert res["rag"]["sources"][0]["doc_id"] == "product/heron-installation.md"
    assert res["rag"]["prompt_tokens"] > res["base"]["prompt_tokens"], "passages are in the prompt"


def test_rag_without_a_generator_returns_passages_and_other_modes_say_why(answering):
    root, overrides = answering
    params = load_params(root / "params.yaml", [*overrides, f"generate.model={root / 'no-such-model'}"])
    answerer = Answerer(root, params, adapter_version="v-unknown")
    try:
        res = answerer.answer("Which model is certified for dual-fuel systems?", "rag", 3)
        assert res["answer"] is None and len(res["sources"]) == 3 and "generate.model" in res["note"]
        with pytest.raises(ConfigError, match="--adapter v-unknown: no such adapter.*Known versions: v"):
            answerer.answer("Which model?", "ft")
    finally:
        answerer.close()


def test_ask_and_compare_from_the_cli_and_the_flow(answering):
    root, overrides = answering
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "Which model is certified for dual-fuel systems?",
            "--mode",
            "hybrid",
            "--top-k",
            "2",
            "--json",
            *overrides,
            "--params",
            str(root / "params.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["mode"] == "hybrid" and len(answer["sources"]) == 2 and answer["adapter"]

    qa = root / "qa.jsonl"
    qa.write_text("".join(QA.read_text().splitlines(keepends=True)[:4]))
    report = compare(root=str(root), qa_file=str(qa), overrides=overrides)
    modes = {r["mode"]: r for r in report["modes"]}
    assert list(modes) == ["base", "rag", "ft", "hybrid"] and all(r["status"] == "ok" for r in modes.values())
    assert modes["rag"]["recall_at_3"] == 1.0 and modes["ft"]["recall_at_3"] is None  # generate.passages = 3
    assert all(0 <= modes[m]["f1"] <= 1 and modes[m]["answers_per_s"] > 0 for m in modes)
    assert modes["ft"]["adapter_format"] == "instruction" and modes["rag"]["params_m"] > 0
    assert modes["hybrid"]["adapter"] and modes["base"]["adapter"] is None
    costs = report["costs"]
    assert costs["index"]["points"] > 0 and costs["adapter"]["adapter_mb"] > 0 and costs["adapter"]["trainings"] == 1
    assert report["recommendation"]["why"], "the recommendation explains itself"
    assert json.loads((root / "data/metrics/compare.json").read_text())["questions"] == 4

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["compare-modes", "compare-summary"]))
        )
    assert {a.key for a in found} == {"compare-modes", "compare-summary"}
    summary = next(a for a in found if a.key == "compare-summary").data
    assert "| hybrid |" in summary and "Recommendation" in summary


def test_compare_on_a_doc_ids_only_file_scores_retrieval_and_says_so(answering):
    root, overrides = answering
    qa = root / "doc_ids_only.jsonl"
    qa.write_text(
        "".join(
            json.dumps({"question": json.loads(line)["question"], "doc_ids": json.loads(line)["doc_ids"]}) + "\n"
            for line in QA.read_text().splitlines()[:3]
        )
    )
    report = compare(root=str(root), qa_file=str(qa), overrides=overrides)
    modes = {r["mode"]: r for r in report["modes"]}
    assert modes["rag"]["status"] == modes["hybrid"]["status"] == "retrieval only" and modes["rag"]["f1"] is None
    assert modes["base"]["status"] == modes["ft"]["status"] == "not scored"
    assert modes["rag"]["recall_at_3"] > 0
    rec = report["recommendation"]
    assert rec["choice"] is None and "doc_ids but no answers" in rec["why"][0]


def test_compare_refuses_questions_the_adapter_trained_on_and_accepts_its_heldout_split(tmp_path, tiny_causal):
    root = tmp_path
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    for folder in ("data/sample/corpus", "data/sample/train", "infra/deepspeed"):
        shutil.copytree(REPO / folder, root / folder)
    index_stages(root)
    overrides = [
        f"model.base={tiny_causal}",
        "dataset.format=qa",
        "dataset.max_length=512",
        "train.deepspeed=none",
        "train.max_steps=2",
    ]
    params = load_params(root / "params.yaml", overrides)
    stats = {stage: run_stage(stage, StageContext(Layout(root), params)) for stage in stage_names("model")}
    assert stats["build_dataset"]["format"] == "qa" and stats["build_dataset"]["heldout_questions"] > 0
    heldout = Layout(root).heldout_qa
    trained = stats["build_dataset"]["train_examples"]
    args = ["--params", str(root / "params.yaml"), *overrides]

    result = CliRunner().invoke(app, ["compare", "--qa", str(root / "data/sample/train/kb_qa.jsonl"), *args])
    assert result.exit_code == 3, result.output  # ConfigError
    message = " ".join(result.output.split())
    assert f"{trained} of {trained + len(read_qa_set(heldout))} questions were in adapter" in message
    assert "Traceback" not in result.output and str(heldout.relative_to(root)) in message

    result = CliRunner().invoke(app, ["compare", "--qa", str(heldout), "--json", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {r["mode"]: r["status"] for r in report["modes"]}["ft"] == "ok"
