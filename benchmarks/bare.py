"""The bare-library baseline as the minimal script a user would write, run as its own process.

    python -m benchmarks.bare --chunks chunks.jsonl --qdrant DIR

sentence-transformers `encode` of ragtune's chunk texts (same model, batch size, normalization) and
qdrant-client `upload_points` of the same ids, vectors and payload into a new local collection. Prints one
JSON line with the seconds of each step, imports included, so it compares with a `ragtune refresh` process.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.refresh import bare_refresh

START = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", required=True, help="ragtune's data/chunks/chunks.jsonl")
    ap.add_argument("--qdrant", required=True, help="folder for a new local Qdrant store")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--points-batch", type=int, default=256)
    a = ap.parse_args()
    t0 = time.perf_counter()
    import qdrant_client  # noqa: F401  (timed: part of what a script pays)
    import sentence_transformers  # noqa: F401

    imports = time.perf_counter() - t0
    with open(a.chunks, encoding="utf-8") as f:
        chunks = [json.loads(line) for line in f if line.strip()]
    from pathlib import Path

    res = bare_refresh(chunks, Path(a.qdrant), a.batch_size, a.points_batch)
    res.update(
        import_seconds=round(imports, 3), chunks=len(chunks), process_seconds=round(time.perf_counter() - START, 3)
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
