"""Read what a workspace's embedded store really holds (the published generation, as any reader sees it)."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.config import load_params
from tasks.kb.edge import EdgeStore
from tasks.kb.store import open_store


def stored_points(root: Path, *overrides: str) -> dict[str, dict]:
    store = open_store(root, load_params(root / "params.yaml", list(overrides)).index)
    assert isinstance(store, EdgeStore), "the tests read the default embedded store"
    try:
        out: dict[str, dict] = {}
        for records in store.records():
            for r in records:
                assert str(r.id) not in out, f"duplicate point id {r.id}"
                out[str(r.id)] = dict(r.payload or {})
        return out
    finally:
        store.close()


def expected_ids(root: Path) -> set[str]:
    lines = (root / "data/chunks/chunks.jsonl").read_text().splitlines()
    return {json.loads(line)["point_id"] for line in lines if line.strip()}
