"""The model registry: every candidate kept as a version, production pointed at one only when it beats the current
one. Everything that reads or moves the production pointer goes through ModelRegistry.

models/
  production.json        the production pointer: version, metric, value, when, why
  lineage.jsonl          one line per candidate: version, parent (production at the time), metrics, verdict
  versions/<version>/    adapter + ragtune.json (config, data version, base model, library versions) + metrics
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.core.clock import utc_iso, utc_version
from tasks.core.workspace import Layout, read_json, read_jsonl, write_json

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
        return Decision(
            False,
            metric,
            None,
            None,
            min_delta,
            f"the candidate has no '{metric}' metric (set promote.metric to one it reports, "
            f"e.g. eval_loss; qa_* needs evaluate.qa_file)",
        )
    if production is None:
        return Decision(True, metric, cand, None, min_delta, "no production adapter yet")
    prod = production.get(metric)
    if prod is None:
        return Decision(True, metric, cand, None, min_delta, f"production has no '{metric}' to compare with")
    lower = metric in LOWER_IS_BETTER
    gain = (prod - cand) if lower else (cand - prod)
    word = "lower" if lower else "higher"
    if gain >= min_delta and gain > 0:
        return Decision(
            True,
            metric,
            cand,
            prod,
            min_delta,
            f"{metric} {cand:.4f} vs production {prod:.4f}: {gain:.4f} better ({word} is better), "
            f">= promote.min_delta={min_delta}",
        )
    return Decision(
        False,
        metric,
        cand,
        prod,
        min_delta,
        f"{metric} {cand:.4f} vs production {prod:.4f}: improvement {gain:.4f} is below "
        f"promote.min_delta={min_delta} ({word} is better); candidate kept as a version, not promoted",
    )


def new_version() -> str:
    return utc_version()


EVALUATION = "evaluation.json"  # in each version folder: metrics, decision and its lineage line


class ModelRegistry:
    """models/ of one workspace: the production pointer, the version folders, their info and the lineage."""

    def __init__(self, ws: Layout):
        self.ws = ws

    def production(self) -> dict | None:
        """The pointer (version, path, metric, value, metrics, promoted_at, reason, previous), or None."""
        return json.loads(self.ws.production.read_text()) if self.ws.production.exists() else None

    def production_version(self) -> str | None:
        pointer = self.production()
        return pointer["version"] if pointer else None

    def folder(self, version: str) -> Path:
        return self.ws.versions / version

    def info(self, version: str) -> dict:
        """The version's ragtune.json: config, base model, dataset (format, hashes, kb), libraries, metrics."""
        return read_json(self.folder(version) / "ragtune.json", "train")

    def known(self) -> list[str]:
        """Versions that hold an adapter, oldest first."""
        versions = self.ws.versions
        if not versions.is_dir():
            return []
        return sorted(p.name for p in versions.iterdir() if not p.name.startswith(".") and (p / "adapter").is_dir())

    def lineage(self) -> list[dict]:
        return read_jsonl(self.ws.lineage, "promote") if self.ws.lineage.exists() else []

    def record(self, candidate_dir: Path, version: str, decision: Decision, metrics: dict, parent: str | None) -> dict:
        """Copy the candidate to versions/<version>, move the pointer if promoted, then append the lineage.

        Each step is atomic and the order makes a kill between steps harmless: the version folder is complete
        (copied under a temp name, renamed) before the pointer names it, and the lineage line comes last, so it
        never claims a promotion the pointer does not show. A line lost to a kill is restored from the version
        folder's own copy at the start of the next record.
        """
        self._restore_lineage()
        self.ws.versions.mkdir(parents=True, exist_ok=True)
        entry = {
            "version": version,
            "parent": parent,
            "promoted": decision.promote,
            "reason": decision.reason,
            "metric": decision.metric,
            "value": decision.candidate,
            "production_value": decision.production,
            "at": utc_iso(),
        }
        tmp = self.ws.versions / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(candidate_dir, tmp)
        write_json(tmp / EVALUATION, {"metrics": metrics, "decision": asdict(decision), "lineage": entry})
        tmp.rename(self.folder(version))
        if decision.promote:
            write_json(
                self.ws.production,
                {
                    "version": version,
                    "path": f"versions/{version}",
                    "metric": decision.metric,
                    "value": decision.candidate,
                    "metrics": metrics,
                    "promoted_at": entry["at"],
                    "reason": decision.reason,
                    "previous": parent,
                },
            )
        self._append([entry])
        return entry

    def _restore_lineage(self) -> None:
        """Append the line of each version folder a killed record left without one, oldest first. A promotion
        whose pointer never moved (the kill came first) is recorded as not promoted."""
        listed = {e["version"] for e in self.lineage()}
        production = self.production_version()
        lost = []
        for v in self.known():
            kept = self.folder(v) / EVALUATION
            entry = read_json(kept, "promote").get("lineage") if v not in listed and kept.exists() else None
            if entry and entry["promoted"] and v != production:
                entry = {
                    **entry,
                    "promoted": False,
                    "reason": f"interrupted before the pointer moved ({entry['reason']})",
                }
            if entry:  # folders written before they kept their line have none: nothing to restore
                lost.append(entry)
        self._append(lost)

    def _append(self, entries: list[dict]) -> None:
        if entries:
            with self.ws.lineage.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(e) + "\n" for e in entries))
