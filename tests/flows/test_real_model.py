"""The packaged SmolLM2-135M-Instruct, for real and offline: GGUF conversion, a RAG answer from a crafted passage,
and a short RAFT retrain on fictional facts that raises held-out F1. Assertions are directions, never times."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.knowledge import build_corpus
from tasks.answer.answerer import Answerer
from tasks.answer.compare import check_heldout, evaluate_mode
from tasks.core.config import DEFAULT_LM, ConfigError, load_params
from tasks.core.qa import read_qa_set
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.kb.retrieval import without_query_cache
from tasks.lm.models import CONVERTED, local_model
from tasks.pipeline import run_stage, stage_names

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

REPO = Path(__file__).resolve().parents[2]
KB_STAGES = stage_names("kb", optional=False)  # no retrieve.qa_file here
TRAIN_STAGES = stage_names("model")
CRAFTED = {
    "kalvoran.md": "# Kalvoran\n\nThe research vessel Kalvoran is registered under the code QX-4471. She was "
    "launched on 14 March 2041 and is commanded by Orla Vantrees.",
    "brenmoor.md": "# Brenmoor\n\nBrenmoor is a river town of 3,870 people. Its stone bridge was opened in 1888 "
    "and the town hall in 1902.",
    "tesmar.md": "# Tesmar alloy\n\nTesmar is a copper alloy used in ship propellers. It resists salt water and "
    "is cast in large sand moulds.",
}


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    """The default model converted once for this module (about 25 s); workspaces link to it."""
    root = tmp_path_factory.mktemp("smollm2")
    local_model(DEFAULT_LM, root)
    return root / "data/cache/models"


def project(root: Path, corpus: Path, cache: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "infra/deepspeed", root / "infra/deepspeed")
    (root / "data/cache").mkdir(parents=True)
    (root / "data/cache/models").symlink_to(cache, target_is_directory=True)
    params = load_params(root / "params.yaml", [f"ingest.sources=[{corpus}]"])
    for stage in KB_STAGES:
        run_stage(stage, StageContext(Layout(root), params))
    return root


def test_the_packaged_gguf_converts_once_into_an_ordinary_hf_folder(model_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (folder,) = [p for p in model_cache.iterdir() if p.is_dir()]
    info = json.loads((folder / CONVERTED).read_text())
    assert info["architecture"] == "LlamaForCausalLM" and info["parameters"] == 134_515_008 and info["chat_template"]
    assert folder.name.startswith("SmolLM2-135M-Instruct.Q4_1-") and folder.name.endswith(info["sha256"][:16])
    marker = (folder / CONVERTED).stat().st_mtime_ns
    assert local_model(DEFAULT_LM, model_cache.parents[2]) == str(folder)  # cached: no second conversion
    assert (folder / CONVERTED).stat().st_mtime_ns == marker
    assert (folder / "model.safetensors").is_file() and not list(model_cache.glob("*.tmp"))
    model = AutoModelForCausalLM.from_pretrained(folder)  # no gguf_file: PEFT and the Trainer see a normal model
    assert type(model).__name__ == "LlamaForCausalLM" and AutoTokenizer.from_pretrained(folder).chat_template


def test_rag_answers_with_the_fact_from_a_crafted_passage_and_repeats_it_exactly(tmp_path, model_cache):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in CRAFTED.items():
        (corpus / name).write_text(text)
    root = project(tmp_path / "project", corpus, model_cache)
    modes = ("rag", "base")
    answerer = Answerer(root, load_params(root / "params.yaml", [f"ingest.sources=[{corpus}]"]))
    try:
        rag, base = (answerer.answer("What is the registry code of the research vessel Kalvoran?", m) for m in modes)
    finally:
        answerer.close()
    assert "QX-4471" in rag["answer"], rag
    assert rag["sources"][0]["doc_id"] == "kalvoran.md" and rag["model"] == DEFAULT_LM
    assert "QX-4471" not in base["answer"], "closed book, the model cannot know a fictional code"

    again = Answerer(root, load_params(root / "params.yaml", [f"ingest.sources=[{corpus}]"]))  # a second load
    try:
        repeated = [again.answer("What is the registry code of the research vessel Kalvoran?", m) for m in modes]
    finally:
        again.close()
    assert [r["answer"] for r in repeated] == [rag["answer"], base["answer"]], "greedy decoding is deterministic"


def test_a_short_raft_retrain_raises_heldout_f1_over_the_untrained_model(tmp_path, model_cache):
    kb = build_corpus(tmp_path / "kb", entities=6, seed=1)
    root = project(tmp_path / "project", Path(kb["corpus"]), model_cache)
    base = [f"ingest.sources=[{kb['corpus']}]"]
    evals = read_qa_set(Path(kb["eval_qa"]))

    def f1(mode: str, adapter: str | None) -> float:
        params = without_query_cache(load_params(root / "params.yaml", base))
        answerer = Answerer(root, params, adapter)
        try:
            return evaluate_mode(answerer.answer_many, mode, evals, params.generate.passages)["f1"]
        finally:
            answerer.close()

    untrained = f1("rag", None)
    params = load_params(
        root / "params.yaml",
        [
            *base,
            "dataset.format=raft",
            f"dataset.sources=[{kb['train_qa']}]",
            "dataset.raft.distractors=1",
            "train.deepspeed=none",
            "train.max_steps=12",
            "train.learning_rate=0.001",
            "train.save_steps=1000",
        ],
    )
    stats = {stage: run_stage(stage, StageContext(Layout(root), params)) for stage in TRAIN_STAGES}
    version = stats["promote"]["version"]
    trained = f1("hybrid", version)
    assert trained > untrained, (untrained, trained)

    info = json.loads((root / "models/versions" / version / "ragtune.json").read_text())
    assert info["dataset"]["format"] == "raft" and info["dataset"]["kb"]["kb_tag"].startswith("kb/")
    assert (
        info["dataset"]["raft"]["with_oracle"] + info["dataset"]["raft"]["without_oracle"]
        == stats["build_dataset"]["examples"]
    )
    train_rows = read_qa_set(Path(kb["train_qa"]))
    answerer = Answerer(root, params, version)
    with pytest.raises(ConfigError, match=r"of 24 questions were in adapter .* training set"):
        check_heldout(answerer.adapter_for, ["hybrid"], train_rows, "train_qa.jsonl")
    check_heldout(answerer.adapter_for, ["hybrid"], evals, "eval_qa.jsonl")  # different phrasings: allowed
