"""Read what a workspace's local Qdrant store really holds."""

from __future__ import annotations

import json
from pathlib import Path

from qdrant_client import QdrantClient


def stored_points(root: Path, collection: str = "ragtune") -> dict[str, dict]:
    client = QdrantClient(path=str(root / "data/qdrant"))
    try:
        out, offset = {}, None
        while True:
            points, offset = client.scroll(collection, limit=1000, offset=offset, with_payload=True)
            for p in points:
                assert str(p.id) not in out, f"duplicate point id {p.id}"
                out[str(p.id)] = p.payload
            if offset is None:
                return out
    finally:
        client.close()


def expected_ids(root: Path) -> set[str]:
    lines = (root / "data/chunks/chunks.jsonl").read_text().splitlines()
    return {json.loads(line)["point_id"] for line in lines if line.strip()}
