"""The promotion rule, and a promotion killed half-way (tasks/train/registry.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tasks.core.workspace import Layout
from tasks.train.registry import ModelRegistry, decide, primary_metric

REPO = Path(__file__).resolve().parents[3]


def test_promotion_rule():
    assert decide({"eval_loss": 2.0}, None, "eval_loss", 0.1).promote
    better = decide({"eval_loss": 1.5}, {"eval_loss": 2.0}, "eval_loss", 0.1)
    assert better.promote and "better" in better.reason
    small = decide({"eval_loss": 1.95}, {"eval_loss": 2.0}, "eval_loss", 0.1)
    assert not small.promote and "below promote.min_delta=0.1" in small.reason
    assert decide({"f1": 0.8}, {"f1": 0.7}, "f1", 0.05).promote
    assert not decide({"f1": 0.7}, {"f1": 0.7}, "f1", 0.0).promote, "a tie never replaces production"
    assert not decide({}, None, "qa_exact", 0).promote
    assert primary_metric("auto", "seq_cls") == "f1" and primary_metric("auto", "causal_lm") == "eval_loss"


KILLER = """
import json, os, signal, sys
from pathlib import Path
import tasks.train.registry as registry
from tasks.core.workspace import Layout

root, when = Path(sys.argv[1]), sys.argv[2]
real_write = registry.write_json

def write_json(path, data):
    if path.name == "production.json" and when == "before_pointer":
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(path, data)
    if path.name == "production.json" and when == "after_pointer":
        os.kill(os.getpid(), signal.SIGKILL)

registry.write_json = write_json
decision = registry.decide({"eval_loss": 1.0}, {"eval_loss": 2.0}, "eval_loss", 0.1)
registry.ModelRegistry(Layout(root)).record(root / "models/candidate", "v2", decision, {"eval_loss": 1.0}, "v1")
"""


def promote_killed(tmp_path: Path, when: str) -> ModelRegistry:
    """A workspace whose production is v1; then a process promoting v2 is SIGKILLed at `when`."""
    ws = Layout(tmp_path)
    (ws.candidate / "adapter").mkdir(parents=True)
    (ws.candidate / "adapter/adapter_model.safetensors").write_bytes(b"weights")
    reg = ModelRegistry(ws)
    reg.record(ws.candidate, "v1", decide({"eval_loss": 2.0}, None, "eval_loss", 0.1), {"eval_loss": 2.0}, None)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), when], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    return reg


def assert_lineage_never_lies(reg: ModelRegistry) -> None:
    promoted = [e["version"] for e in reg.lineage() if e["promoted"]]
    assert promoted and promoted[-1] == reg.production_version(), "the last 'promoted' line names production"


def test_kill_before_the_pointer_moves_leaves_no_promotion_record(tmp_path):
    reg = promote_killed(tmp_path, "before_pointer")
    assert reg.production_version() == "v1"
    assert_lineage_never_lies(reg)
    ws = reg.ws
    reg.record(ws.candidate, "v3", decide({"eval_loss": 3.0}, {"eval_loss": 2.0}, "eval_loss", 0.1), {}, "v1")
    lines = {e["version"]: e for e in reg.lineage()}
    assert list(lines) == ["v1", "v2", "v3"] and not lines["v2"]["promoted"], "v2's pointer never moved"
    assert "interrupted before the pointer moved" in lines["v2"]["reason"]
    assert_lineage_never_lies(reg)
    (ws.versions / ".v4.tmp/adapter").mkdir(parents=True)  # a copy killed before its rename is not a version
    assert ".v4.tmp" not in reg.known()


def test_kill_after_the_pointer_moves_is_healed_by_the_next_record(tmp_path):
    reg = promote_killed(tmp_path, "after_pointer")
    assert reg.production_version() == "v2" and (reg.folder("v2") / "adapter").is_dir()
    assert [e["version"] for e in reg.lineage()] == ["v1"], "the line is lost with the process, not half-written"
    ws = reg.ws
    reg.record(ws.candidate, "v3", decide({"eval_loss": 3.0}, {"eval_loss": 1.0}, "eval_loss", 0.1), {}, "v2")
    assert [e["version"] for e in reg.lineage()] == ["v1", "v2", "v3"]
    assert_lineage_never_lies(reg)
