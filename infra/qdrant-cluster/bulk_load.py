"""Bulk-load ragtune's collection into a Qdrant cluster: no HNSW graph while loading, one graph build after.

    export QDRANT_URL=http://localhost:6333 QDRANT_API_KEY=...     # the key is read from the environment only
    python infra/qdrant-cluster/bulk_load.py points.jsonl --parallel 3 --batch-size 256 \
        --snapshot http://localhost:6333 http://localhost:6343 http://localhost:6353
    # or load with ragtune (one stream): --create-only, then `ragtune refresh`, then --build-only --snapshot ...

Steps: create the collection from collection.json (hnsw m=0) and the payload indexes from payload-indexes.json,
upload in `parallel` streams of `batch_size` points, apply hnsw-m16.json (the graph is built once, over whole
segments), wait until the collection is green, then snapshot each node (a node snapshots only its own shards).
points.jsonl: one point a line, {"id": uuid, "vector": [384 floats], "sparse": {"indices", "values"} | null,
"payload": {"doc_id", "source", ...}}: the points ragtune upserts (tasks/kb/index.py build_points).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

HERE = Path(__file__).resolve().parent


def load_spec(name: str) -> Any:
    """One of the request bodies beside this script (the same JSON works with curl)."""
    return json.loads((HERE / name).read_text())


SPARSE = next(iter(load_spec("collection.json")["sparse_vectors"]))  # "bm25", ragtune's sparse vector name


def create_collection(client: QdrantClient, name: str, body: dict) -> None:
    spec = models.CreateCollection(**body)  # a wrong key or type fails here, before the server sees it
    client.create_collection(
        name,
        vectors_config=spec.vectors,
        sparse_vectors_config=spec.sparse_vectors,
        shard_number=spec.shard_number,
        replication_factor=spec.replication_factor,
        write_consistency_factor=spec.write_consistency_factor,
        on_disk_payload=spec.on_disk_payload,
        hnsw_config=spec.hnsw_config,
        optimizers_config=spec.optimizers_config,
    )


def create_payload_indexes(client: QdrantClient, name: str, specs: list[dict]) -> None:
    """Before any point arrives: an index added later is built over everything already stored."""
    for body in specs:
        spec = models.CreateFieldIndex(**body)
        client.create_payload_index(name, field_name=spec.field_name, field_schema=spec.field_schema, wait=True)


def read_points(path: Path, seen: list[int]) -> Iterator[models.PointStruct]:
    """Streamed, so memory stays flat however large the file; seen[0] counts the points read."""
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                sparse = row.get("sparse")
                vector = row["vector"] if not sparse else {"": row["vector"], SPARSE: models.SparseVector(**sparse)}
                point = models.PointStruct(id=row["id"], vector=vector, payload=row.get("payload") or {})
            except (ValueError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}:{number}: not a point ({exc}); see the format in {__file__}") from None
            seen[0] += 1
            yield point


def upload(client: QdrantClient, name: str, path: Path, parallel: int, batch_size: int) -> int:
    """`parallel` processes, each with its own connection, send batches of `batch_size` points."""
    seen = [0]
    client.upload_points(
        name, read_points(path, seen), batch_size=batch_size, parallel=parallel, max_retries=3, wait=True
    )
    return seen[0]


def build_graph(client: QdrantClient, name: str, body: dict) -> None:
    spec = models.UpdateCollection(**body)
    client.update_collection(name, hnsw_config=spec.hnsw_config, optimizers_config=spec.optimizers_config)


def wait_green(client: QdrantClient, name: str, timeout_s: float, poll_s: float) -> models.CollectionInfo:
    """Green twice in a row: right after the PATCH the optimizers may not have turned the status yellow yet."""
    deadline = time.monotonic() + timeout_s
    greens = 0
    while True:
        time.sleep(poll_s)
        info = client.get_collection(name)
        if info.status == models.CollectionStatus.RED:
            raise SystemExit(f"collection '{name}' is red: {info.optimizer_status}. Check the nodes' logs.")
        greens = greens + 1 if info.status == models.CollectionStatus.GREEN else 0
        if greens >= 2:
            return info
        if time.monotonic() > deadline:
            raise SystemExit(
                f"collection '{name}' still {info.status} after {timeout_s:.0f}s (optimizers building the graph); "
                f"raise --timeout-s or watch GET /collections/{name}"
            )


def snapshot(urls: list[str], api_key: str | None, name: str) -> list[str]:
    taken = []
    for url in urls:
        node = QdrantClient(url=url, api_key=api_key, timeout=600)
        try:
            described = node.create_snapshot(name, wait=True)
        finally:
            node.close()
        taken.append(f"{url}: {described.name if described else '?'}")
    return taken


def create(client: QdrantClient, name: str) -> None:
    """The collection with HNSW off (m=0), then its payload indexes, before any point arrives."""
    if client.collection_exists(name):
        raise SystemExit(
            f"collection '{name}' already exists; this script creates a new one. Pick another --collection "
            "(then point an alias or index.collection at it) or delete the old one first."
        )
    create_collection(client, name, load_spec("collection.json"))
    create_payload_indexes(client, name, load_spec("payload-indexes.json"))


def build(client: QdrantClient, name: str, timeout_s: float, poll_s: float = 5) -> int:
    """HNSW on (hnsw-m16.json), wait for green; returns the exact point count."""
    build_graph(client, name, load_spec("hnsw-m16.json"))
    wait_green(client, name, timeout_s, poll_s)
    return client.count(name, exact=True).count


def bulk_load(
    client: QdrantClient, name: str, points: Path, parallel: int, batch_size: int, timeout_s: float, poll_s: float = 5
) -> tuple[int, int]:
    """create -> parallel upload -> build. Returns (points sent, points stored)."""
    create(client, name)
    sent = upload(client, name, points, parallel, batch_size)
    return sent, build(client, name, timeout_s, poll_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", type=Path, nargs="?", help="points.jsonl, one point a line")
    step = ap.add_mutually_exclusive_group()
    step.add_argument("--create-only", action="store_true", help="collection (m=0) + payload indexes, no points")
    step.add_argument("--build-only", action="store_true", help="m=16, wait for green, snapshot (after a load)")
    ap.add_argument("--collection", default="ragtune", help="index.collection in params.yaml")
    ap.add_argument("--parallel", type=int, default=3, help="upload streams; start at one per node, at most shards")
    ap.add_argument("--batch-size", type=int, default=256, help="points per request; 64-256 is Qdrant's guidance")
    ap.add_argument("--timeout-s", type=float, default=3600, help="longest wait for green after the graph build")
    ap.add_argument("--snapshot", nargs="*", default=[], metavar="URL", help="every node's REST URL")
    args = ap.parse_args(argv)
    if args.points is None and not (args.create_only or args.build_only):
        ap.error("give points.jsonl, or --create-only / --build-only")

    url = os.environ.get("QDRANT_URL")
    if not url:
        raise SystemExit("set QDRANT_URL (any node, e.g. http://localhost:6333) and QDRANT_API_KEY")
    api_key = os.environ.get("QDRANT_API_KEY") or None
    client = QdrantClient(url=url, api_key=api_key, timeout=120)
    try:
        if args.create_only:
            create(client, args.collection)
            print(f"{args.collection}: created with hnsw m=0; load it, then run --build-only")
            return 0
        if args.build_only:
            sent, stored = None, build(client, args.collection, args.timeout_s)
        else:
            sent, stored = bulk_load(
                client, args.collection, args.points, args.parallel, args.batch_size, args.timeout_s
            )
    except (ResponseHandlingException, UnexpectedResponse) as exc:
        raise SystemExit(
            f"Qdrant at {urlsplit(url).netloc.rpartition('@')[2]}: {str(exc).splitlines()[0]}. "
            "Check that the cluster is up (GET /cluster), QDRANT_URL and QDRANT_API_KEY."
        ) from None
    finally:
        client.close()
    print(f"{args.collection}: {stored} points stored, status green" + (f", {sent} sent" if sent is not None else ""))
    if sent is not None and stored != sent:
        print("the counts differ: duplicate ids in the file, or a lost write; check before serving or snapshotting")
        return 1
    for line in snapshot(args.snapshot, api_key, args.collection):
        print("snapshot", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
