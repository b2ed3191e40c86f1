"""`python -m benchmarks --quick` runs every section end to end; only the JSON's shape is checked, never a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

REPO = Path(__file__).resolve().parents[2]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and x >= 0


@pytest.mark.timeout(1800)
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--docs", "6", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "quick" and res["machine"]["cores"] >= 1 and res["machine"]["libraries"]["torch"]
    for name in ("refresh", "bare", "efficiency", "overhead", "training", "encoders", "knowledge", "generation"):
        assert res[name]["status"] == "ok", (name, res[name])

    systems = res["refresh"]["systems"]
    ours = systems["ragtune"]
    assert ours["status"] == "ok"
    assert ours["full"]["embedded"] == ours["full"]["chunks"] > 0  # cold: everything embedded
    assert ours["unchanged"]["embedded"] == 0  # nothing changed: nothing embedded
    assert 0 < ours["churn_1pct"]["embedded"] < ours["full"]["embedded"]  # only the churned documents' chunks
    assert ours["churn_1pct"]["doc_changes"]["removed"] == 1
    for scenario in ("unchanged", "churn_1pct"):
        assert _number(ours[scenario]["wall_fraction_of_full"])
    assert ours["retrieval_generated"]["questions"] > 0 and _number(ours["retrieval_generated"]["recall_at_5"])
    same = res["refresh"]["ragtune_torch_full"]  # the peers' encoder
    assert same["embedded"] == ours["full"]["embedded"] and _number(same["retrieval_generated"]["recall_at_5"])
    assert res["refresh"]["small_corpus"]["ragtune"]["retrieval"]["recall_at_5"] > 0.5
    for peer in ("llamaindex", "langchain"):  # optional extras: measured when installed, else said why not
        assert systems[peer]["status"] in ("ok", "skipped"), systems[peer]
        if systems[peer]["status"] == "ok":
            assert systems[peer]["unchanged"]["embedded"] <= 1  # LangChain's store embeds one probe text
        else:
            assert "pip install" in systems[peer]["reason"]

    assert res["bare"]["chunks"] == ours["full"]["chunks"]
    for stage in ("embed", "index"):
        assert _number(res["bare"][stage]["ratio_speed"])
    eff = res["efficiency"]
    assert _number(eff["embed"]["efficiency_stage"]) and _number(eff["index"]["efficiency_upsert_loop"])
    over = res["overhead"]
    for run in ("first_run_new_project", "steady_state", "with_running_server"):
        assert _number(over[run]["wall_seconds"]) and over[run]["stage_work_seconds"] > 0
    for run in ("tiny_zero2", "smollm2_zero2"):
        train = res["training"]["runs"][run]
        assert train["ragtune"]["tokens_per_s"] > 0 and _number(train["ratio_tokens_per_s"])
    assert res["training"]["runs"]["smollm2_zero2"]["params_total"] > 100e6  # the real packaged model
    know = res["knowledge"]
    modes = [r["mode"] for r in know["fictional"]["rows"]]
    assert modes[:5] == ["base", "rag", "ft (kb text)", "ft (QA)", "hybrid (RAFT)"]
    assert all(_number(r["f1"]) and _number(r["p50_ms"]) for r in know["fictional"]["rows"])
    assert {a["format"] for a in know["fictional"]["adapters"].values()} == {"kb_text", "qa", "raft"}
    assert all(_number(r["f1"]) for r in know["sample"]["rows"])
    gen = res["generation"]
    assert gen["batched"]["answers_per_s"] > 0 and gen["one_at_a_time"]["answers_per_s"] > 0
    enc = res["encoders"]
    reference = next(iter(enc["backends"].values()))  # PyTorch fp32 at ragtune's batch
    assert reference["sample"]["recall_at_5"] > 50  # the hand-written QA set is answerable
    assert any("embed.backend=openvino-int8" in name for name in enc["backends"])  # the shipped encoder
    assert "decision" in enc
    table = out.with_suffix(".md").read_text()
    assert "#### Refresh" in table and "| ragtune |" in table and "Machine:" in table
    assert "#### Knowledge injection" in table and "| hybrid (RAFT) |" in table and "#### Generation" in table
