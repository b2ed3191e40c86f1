"""Readers never break a refresh on the embedded store: a search loop in another process, and a reader holding
the store for a long time (a `compare`), both run beside a refresh that changes the index. Readers see the old
state or the new one, never an error or half a write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.config import load_params
from tasks.core.errors import GateFailed
from tasks.core.workspace import Layout
from tasks.kb.stages import rollback_index
from tests.flows.helpers import expected_ids, stored_points

from .conftest import refresh
from .test_index_crash import change_corpus

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

REPO = Path(__file__).resolve().parents[2]

SEARCH_LOOP = r"""
import json, sys
from pathlib import Path
from tasks.core.config import load_params
from tasks.kb.retrieval import search_queries
from tasks.kb.store import open_store

root, stop = Path(sys.argv[1]), Path(sys.argv[2])
params = load_params(root / "params.yaml")
seen, counts, errors, rounds = set(), set(), [], 0
while not stop.exists() or rounds < 3:
    try:
        store = open_store(root, params.index)  # what a reader opens now: its size tells which index serves
        counts.add(store.count())
        store.close()
        for r in search_queries(root, params, ["dual fuel heat pump", "on-call allowance"], 50, "hybrid"):
            seen.add(tuple(sorted(h["doc_id"] for h in r["hits"])))
    except Exception as exc:  # any error at all fails the test
        errors.append(f"{type(exc).__name__}: {exc}")
    rounds += 1
print(json.dumps({"rounds": rounds, "errors": errors, "views": len(seen), "counts": sorted(counts)}))
"""


HOLDER = r"""
import json, sys
from pathlib import Path
from tasks.core.config import load_params
from tasks.kb.store import open_store
from tasks.kb.vectors import Fusion

root = Path(sys.argv[1])
store = open_store(root, load_params(root / "params.yaml").index)
before = store.count()
print("ready", before, flush=True)
sys.stdin.readline()  # held open across the refresh, like a long compare
store.query(None, ([1, 2, 3], [1.0, 1.0, 1.0]), 5, 20, Fusion())
print(json.dumps({"before": before, "after": store.count(), "generation": store.generation.name}), flush=True)
store.close()
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_a_search_loop_in_another_process_never_errors_during_refreshes(project, tmp_path):
    stop = tmp_path / "stop"
    loop = subprocess.Popen(
        [sys.executable, "-c", SEARCH_LOOP, str(project), str(stop)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        change_corpus(project)
        refresh(project)  # changes, deletions and additions, published while the loop reads
        (project / "data/sample/corpus/product/new-0.md").unlink()
        refresh(project)
    finally:
        stop.touch()
        out, _ = loop.communicate(timeout=300)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == [], result["errors"][:3]
    assert result["rounds"] >= 3
    assert set(stored_points(project)) == expected_ids(project)


def test_a_refresh_runs_while_a_reader_holds_the_store_and_the_reader_keeps_its_view(project):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project)],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = holder.stdout.readline().split()
        assert ready[0] == "ready", ready
        change_corpus(project)
        result = refresh(project)  # neither waits for the reader nor fails
        assert result["index"]["points_written"] > 0 and result["verify"]["ok"]
        (project / "data/sample/corpus/product/new-0.md").unlink()
        refresh(project)  # the reader's generation is now neither current nor previous
        holder.stdin.write("go\n")
        holder.stdin.flush()
        view = json.loads(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()
    assert view["before"] == view["after"] == int(ready[1]), "the reader's generation changed under it"
    new = len(expected_ids(project))
    assert len(stored_points(project)) == new != view["before"]
    home = project / "data/store/ragtune"
    assert (home / view["generation"]).exists(), "a generation was deleted while a reader held it"
    refresh(project, stages=("index",))  # the reader is gone: the old generation goes with the next writer
    assert not (home / view["generation"]).exists()
    kept = {p.name for p in home.glob("gen-*") if p.is_dir()}
    assert kept == {os.readlink(home / "current"), os.readlink(home / "previous")}, "the previous is kept for rollback"


def test_searches_see_the_old_index_or_the_new_one_through_a_rebuild_a_failed_gate_and_a_rollback(project, tmp_path):
    shutil.copy(REPO / "data/sample/questions.jsonl", project / "data/sample/questions.jsonl")
    qa = "retrieve.qa_file=data/sample/questions.jsonl"
    refresh(project, qa)  # the gate's baseline
    before = len(stored_points(project))
    stop = tmp_path / "stop"
    loop = subprocess.Popen(
        [sys.executable, "-c", SEARCH_LOOP, str(project), str(stop)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        rebuilt = refresh(
            project, "chunk.size_tokens=120", qa, "retrieve.max_recall_drop=0.5"
        )  # every chunk changes: a new index beside
        assert rebuilt["index"]["rebuild"].startswith("chunking changed") and rebuilt["publish"]["published"]
        after = len(stored_points(project))
        assert after != before
        for name in ("heron-installation.md", "heron-api.md", "heron-overview.md"):  # answers to gate questions
            (project / "data/sample/corpus/product" / name).unlink()
        with pytest.raises(GateFailed, match="retrieval gate failed.*The serving index was not changed"):
            refresh(project, "chunk.size_tokens=120", qa, "retrieve.max_recall_drop=0.01")
        assert len(stored_points(project)) == after, "a failed gate serves nothing new"
        with pytest.raises(GateFailed, match="publish: eval_retrieval has not passed on the index of run"):
            refresh(project, qa, stages=("publish",))  # by hand, after the failed gate: still refused
        undone = rollback_index(Layout(project), load_params(project / "params.yaml"))
        assert undone["serving"] == rebuilt["publish"]["previous"] and len(stored_points(project)) == before
    finally:
        stop.touch()
        out, _ = loop.communicate(timeout=300)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == [], result["errors"][:3]
    assert set(result["counts"]) <= {before, after}, "a reader saw an index that was neither served one"
    assert result["rounds"] >= 3
