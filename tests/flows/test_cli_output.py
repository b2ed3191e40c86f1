"""The terminal as a user sees it, through the real `ragtune` command in a fresh process: an expected error is
one line naming the fix and its exit code, with no traceback; `--verbose` and `--debug` show more."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

RAGTUNE = str(Path(sys.executable).parent / "ragtune")


def ragtune(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run the installed command in `root` as a user would (no server, no debug), return (code, output lines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAGTUNE_", "QDRANT_"))} | (env or {})
    env["COLUMNS"] = "100"
    proc = subprocess.run([RAGTUNE, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, (proc.stdout + proc.stderr).splitlines()


def test_missing_source_folder_is_one_line_naming_the_fix(workspace):
    code, lines = ragtune(workspace, "refresh", "--source", "/nonexistent")
    assert code == 4 and len(lines) <= 5, lines
    assert "Traceback" not in "\n".join(lines)
    assert "source folder '/nonexistent' does not exist" in lines[-1] and "Fix ingest.sources" in lines[-1]

    code, lines = ragtune(workspace, "--debug", "refresh", "--source", "/nonexistent")
    assert code == 4 and "Traceback" in "\n".join(lines), "--debug shows where an expected error came from"
    assert "Fix ingest.sources" in lines[-1]


def test_a_gate_failing_inside_the_flow_prints_no_prefect_traceback(workspace):
    """The gate fails in a Prefect task: Prefect's own report of it stays in the run's logs, not the terminal."""
    code, lines = ragtune(workspace, "refresh", "validate.min_documents=1000")
    text = "\n".join(lines)
    assert code == 5 and len(lines) <= 6, lines  # the message, the failed expectation, report, Data Docs, fix
    assert "Traceback" not in text and "INFO" not in text and "resolved params" not in text
    assert lines[0].startswith("error: data quality gate failed") and "Fix the source data" in lines[-1]

    code, lines = ragtune(workspace, "refresh", "validate.min_documents=1000", "--verbose")
    text = "\n".join(lines)
    assert code == 5 and "resolved params" in text and "Beginning flow run" in text, text[-2000:]
    assert "Traceback" not in text, "the failure is the CLI's one line, also with --verbose"
    assert json.loads((workspace / "data/metrics/params.json").read_text())["validate"]["min_documents"] == 1000


def test_a_malformed_training_line_names_file_and_line(workspace):
    bad = workspace / "data/train.jsonl"
    bad.write_text('{"instruction": "Hi?", "output": "Hello."}\n{"instruction": "broken\n')
    code, lines = ragtune(workspace, "retrain", "--source", str(bad), "dataset.format=auto")
    assert code == 4 and len(lines) <= 3, lines
    assert "train.jsonl:2: not valid JSON" in " ".join(lines) and "Traceback" not in "\n".join(lines)


def test_bad_params_and_a_dead_store_are_one_line_each(workspace):
    code, lines = ragtune(workspace, "refresh", "chunk.size_tokens=lots")
    assert code == 3 and len(lines) <= 3 and "chunk.size_tokens" in lines[-1] and "lots" in lines[-1], lines

    dead = {"QDRANT_URL": "http://127.0.0.1:9", "QDRANT_API_KEY": "not-logged-7f3a"}  # nothing listens on port 9
    code, lines = ragtune(workspace, "search", "heat pumps", "index.retries=0", env=dead)
    assert code == 6 and len(lines) == 1 and "server is up" in lines[0], lines
    assert "not-logged-7f3a" not in lines[0]


def test_versions_and_watch_say_why_and_how_to_start(workspace):
    code, lines = ragtune(workspace, "versions")
    text = " ".join(lines)
    assert code == 0 and len(lines) <= 3, lines
    assert "versioning.enabled: true" in text and "refuse key=value overrides" in text

    code, lines = ragtune(workspace, "watch")
    text = " ".join(lines)
    assert code == 3 and len(lines) <= 3, lines
    assert "no Prefect server is running" in text and "ragtune server" in text and "Traceback" not in text


def test_stage_help_lists_every_stage_of_the_registry(workspace):
    from tasks.pipeline import STAGES

    code, lines = ragtune(workspace, "stage", "--help")
    text = " ".join(" ".join(lines).replace("│", " ").split())
    assert code == 0 and all(name in text for name in STAGES) and "eval_retrieval" in text


def test_profile_prints_the_data_profile_and_saves_it(workspace):
    qa = Path(__file__).resolve().parents[2] / "data/sample/questions.jsonl"
    code, lines = ragtune(workspace, "profile", "--qa", str(qa), "--json")
    assert code == 0, lines[-20:]
    report = json.loads("\n".join(lines[lines.index("{") :]))
    assert report["kb"]["documents"] == 31 and report["qa"]["answerable"] == report["qa"]["questions"] == 26
    assert report["train"]["examples"] == 83 and report["few_train_examples"] is True
    assert json.loads((workspace / "data/metrics/profile.json").read_text()) == report
    assert any(a.startswith("Too few training examples to fine-tune reliably: 83 usable") for a in report["advice"])


def test_a_refresh_in_a_new_project_is_a_real_prefect_run_and_leaves_no_server(workspace):
    """No server configured: the command starts Prefect's temporary API itself (its database copied from the migrated
    template when `make install` built one), records the flow run there and stops it on exit."""

    def servers() -> set[str]:  # Prefect API servers on this machine (the session's test server among them)
        found = subprocess.run(["pgrep", "-f", "prefect.server.api.server:create_app"], capture_output=True, text=True)
        return set(found.stdout.split())

    assert not (workspace / ".prefect/prefect.db").exists()
    before = servers()
    code, lines = ragtune(workspace, "refresh", "--json")
    assert code == 0, lines[-20:]
    with closing(sqlite3.connect(workspace / ".prefect/prefect.db")) as db:
        runs = db.execute("SELECT name, state_type FROM flow_run").fetchall()
        flows = {name for (name,) in db.execute("SELECT name FROM flow")}
    assert [state for _, state in runs] == ["COMPLETED"] and flows == {"kb_refresh"}
    assert servers() <= before, "the temporary API stops with the command"
