"""promote: keep every candidate as a version; point production at it only when it beats the current one.

models/
  production.json        the production pointer: version, metric, value, when, why
  lineage.jsonl          one line per candidate: version, parent (production at the time), metrics, verdict
  versions/<version>/    adapter + ragtune.json (config, data version, base model, library versions) + metrics
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from tasks.core.workspace import write_json

LOWER_IS_BETTER = {"eval_loss", "perplexity"}


def primary_metric(configured: str, task: str) -> str:
    if configured != "auto":
        return configured
    return "f1" if task == "seq_cls" else "eval_loss"


@dataclass
class Decision:
    promote: bool
    metric: str
    candidate: float | None
    production: float | None
    min_delta: float
    reason: str


def decide(candidate: dict, production: dict | None, metric: str, min_delta: float) -> Decision:
    """Promote when there is no production adapter, or the candidate is better by at least min_delta."""
    cand = candidate.get(metric)
    if cand is None:
        return Decision(False, metric, None, None, min_delta,
                        f"the candidate has no '{metric}' metric (set promote.metric to one it reports, "
                        f"e.g. eval_loss; qa_* needs evaluate.qa_file)")
    if production is None:
        return Decision(True, metric, cand, None, min_delta, "no production adapter yet")
    prod = production.get(metric)
    if prod is None:
        return Decision(True, metric, cand, None, min_delta, f"production has no '{metric}' to compare with")
    lower = metric in LOWER_IS_BETTER
    gain = (prod - cand) if lower else (cand - prod)
    word = "lower" if lower else "higher"
    if gain >= min_delta and gain > 0:
        return Decision(True, metric, cand, prod, min_delta,
                        f"{metric} {cand:.4f} vs production {prod:.4f}: {gain:.4f} better ({word} is better), "
                        f">= promote.min_delta={min_delta}")
    return Decision(False, metric, cand, prod, min_delta,
                    f"{metric} {cand:.4f} vs production {prod:.4f}: improvement {gain:.4f} is below "
                    f"promote.min_delta={min_delta} ({word} is better); candidate kept as a version, not promoted")


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("v%Y%m%d-%H%M%S-%f")[:-3]


def record(models: Path, candidate_dir: Path, version: str, decision: Decision, metrics: dict,
           parent: str | None) -> dict:
    """Copy the candidate to versions/<version>, append lineage, and move the pointer if promoted.

    The version folder is complete (copied under a temp name, then renamed) before the pointer names it.
    """
    versions = models / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    tmp = versions / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(candidate_dir, tmp)
    write_json(tmp / "evaluation.json", {"metrics": metrics, "decision": asdict(decision)})
    tmp.rename(versions / version)
    entry = {"version": version, "parent": parent, "promoted": decision.promote, "reason": decision.reason,
             "metric": decision.metric, "value": decision.candidate, "production_value": decision.production,
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with (models / "lineage.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    if decision.promote:
        write_json(models / "production.json", {"version": version, "path": f"versions/{version}",
                                                "metric": decision.metric, "value": decision.candidate,
                                                "metrics": metrics, "promoted_at": entry["at"],
                                                "reason": decision.reason, "previous": parent})
    return entry
