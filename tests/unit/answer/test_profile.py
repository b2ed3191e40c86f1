"""`ragtune profile` on a real workspace (tasks/answer/profile.py): ingest and clean run in memory on the sources,
the embedding and LM tokenizers count tokens, and the advice names each problem with its numbers."""

from __future__ import annotations

import json

from tasks.answer.compare import recommend
from tasks.answer.profile import build_profile
from tasks.core.config import CompareParams, load_params
from tasks.core.workspace import Layout
from tests.unit.answer.test_compare import _costs, _mode

FOOTER = "This article is provided by the Larkspur support team. Contact support@larkspur.example for help."


def test_profile_of_a_workspace_names_what_stands_out(workspace, tiny_causal):
    corpus = workspace / "data/sample/corpus"
    for path in sorted(corpus.rglob("*.md"))[:12]:
        path.write_text(path.read_text() + f"\n\n{FOOTER}\n")
    (corpus / "de").mkdir()
    for i in range(6):
        (corpus / "de" / f"artikel-{i}.md").write_text(
            f"# Artikel {i}\n\nDer Thermostat Nummer {i} hält die Wohnung im Winter warm und spart in der Nacht "
            f"Energie, weil er die Temperatur um {i + 2} Grad absenkt, sobald alle schlafen gegangen sind.\n"
        )
    qa = [
        {"question": "On-call allowance?", "answers": ["400 eur"]},
        {"question": "Capital of Mars?", "answers": ["Olympus City"]},
    ]
    params = load_params(workspace / "params.yaml", [f"model.base={tiny_causal}"])
    ws = Layout(workspace)
    profile = build_profile(ws, params, qa, "qa.jsonl")
    kb, train = profile["kb"], profile["train"]
    assert kb["read"] == "sources, read now" and not ws.clean_documents.exists()  # nothing was written
    assert kb["documents"] == 37 and kb["tokens"]["count"] == 37
    assert (kb["exact_duplicates"], kb["near_duplicates"]) == (2, 1)  # the footer made one copy a near-duplicate
    assert kb["boilerplate_lines"][0] == {"line": FOOTER, "documents": 12} and kb["boilerplate_share"] > 0.03
    assert kb["languages"]["en"] < 0.9 and "de" in kb["languages"]
    assert train["format"] == "raft" and train["usable"] == 83 and train["tokens"]["count"] == 83
    assert train["answerable"]["share"] == 1.0
    assert profile["qa"] == {"file": "qa.jsonl", "questions": 2, "answerable": 1, "share": 0.5,
                             "not_found": ["Capital of Mars?"]}  # fmt: skip
    advice = "\n".join(profile["advice"])
    assert "Too few training examples to fine-tune reliably: 83 usable < profile.min_train_examples=500" in advice
    assert "Language mix of the knowledge base: en" in advice and "multilingual" in advice
    assert "Only 1 of 2 answers of the QA file (50%)" in advice
    json.dumps(profile)  # what profile.json and --json hold

    tight = load_params(
        workspace / "params.yaml", ["profile.max_boilerplate_share=0.01", "profile.min_train_examples=10"]
    )
    again = build_profile(ws, tight, None, None)
    assert any("of the knowledge base's text is lines repeated across documents" in a for a in again["advice"])
    assert again["few_train_examples"] is False

    counts = build_profile(ws, params, qa, "qa.jsonl", full=False)  # what compare asks: no sources, no models
    assert counts["kb"] == {"unavailable": "no refresh yet (data/clean is empty): run `ragtune refresh`"}
    assert "qa" not in counts and counts["train"] == {
        "format": "raft",
        "examples": 83,
        "usable": 83,
        "exact_duplicates": 0,
    }
    gone = load_params(workspace / "params.yaml", ["dataset.sources=[missing.jsonl]"])
    assert build_profile(ws, gone, None, None, full=False)["few_train_examples"] is None  # unknown, not "few"


def test_compare_prefers_a_mode_without_an_adapter_when_training_data_is_thin():
    results = [_mode("rag", 0.70, recall=0.9), _mode("ft", 0.72), _mode("hybrid", 0.71, recall=0.9)]
    thin = {"few_train_examples": True, "advice": ["Too few training examples to fine-tune reliably: 83 usable."]}
    cheap_retrain = _costs(0, refresh=500.0, retrain=100.0)
    assert recommend(results, cheap_retrain, CompareParams())["choice"] == "ft"  # tied on accuracy, cheaper to keep
    rec = recommend(results, cheap_retrain, CompareParams(), thin)
    assert (
        rec["choice"] == "rag" and rec["why"][-1] == "Data: Too few training examples to fine-tune reliably: 83 usable."
    )
