"""watch: has the training data changed since the production adapter was trained? (pure logic, no Prefect)

The baseline is the example set recorded with the production adapter (models/versions/<v>/ragtune.json).
The last emitted data state is remembered in models/watch.json, so one change emits one event, not one per
interval, even while the retrain it triggered is still running or was not promoted.
"""

from __future__ import annotations

import json

from tasks.core.config import Params
from tasks.core.workspace import Layout, write_json
from tasks.train.examples import data_version, read_examples, version_files
from tasks.train.registry import ModelRegistry


def production_hashes(ws: Layout) -> tuple[set[str], str | None]:
    registry = ModelRegistry(ws)
    version = registry.production_version()
    if version is None:
        return set(), None
    return set(registry.info(version).get("dataset", {}).get("example_hashes", [])), version


def detect_change(ws: Layout, params: Params) -> dict:
    """New/removed examples vs production, the data hash, and whether an event should be emitted."""
    examples, fmt = read_examples(ws.root, params.dataset.sources, params.dataset.format, params.dataset.system_prompt)
    current = {e.content_hash[:16] for e in examples if not e.problem}
    baseline, production = production_hashes(ws)
    versions = data_version(ws.root, version_files(ws.root, fmt, params.dataset.sources))
    data_hash = json.dumps(versions, sort_keys=True)
    state = json.loads(ws.watch_state.read_text()) if ws.watch_state.exists() else {}
    new = len(current - baseline)
    change = {
        "dataset": ",".join(params.dataset.sources),
        "data_version": versions,
        "format": fmt,
        "examples": len(current),
        "new_examples": new,
        "removed_examples": len(baseline - current),
        "production_version": production,
    }
    if state.get("emitted_for") == data_hash:
        change.update(emit=False, reason="already emitted for this data")
    elif new < params.schedule.min_new_examples:
        change.update(
            emit=False, reason=f"{new} new examples < schedule.min_new_examples={params.schedule.min_new_examples}"
        )
    else:
        change.update(emit=True, reason=f"{new} new examples since {production or 'no production adapter'}")
    change["data_hash"] = data_hash
    return change


def remember_emitted(ws: Layout, change: dict) -> None:
    write_json(ws.watch_state, {"emitted_for": change["data_hash"], "new_examples": change["new_examples"]})
