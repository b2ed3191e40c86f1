"""Where each stage reads and writes (the same paths dvc.yaml names), and atomic file helpers."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.errors import BusyError, RagtuneError


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def raw_documents(self) -> Path:
        return self.root / "data/raw/documents.jsonl"

    @property
    def clean_documents(self) -> Path:
        return self.root / "data/clean/documents.jsonl"

    @property
    def clean_drops(self) -> Path:
        return self.root / "data/clean/drops.jsonl"

    @property
    def quality_report(self) -> Path:
        return self.root / "data/quality/report.json"

    @property
    def gx_root(self) -> Path:
        return self.root / "data/quality"  # GX keeps its project in data/quality/gx

    @property
    def gx_project(self) -> Path:
        return self.gx_root / "gx"  # suites, validation results, Data Docs HTML

    @property
    def chunks_dir(self) -> Path:
        return self.root / "data/chunks"

    @property
    def chunks(self) -> Path:
        return self.chunks_dir / "chunks.jsonl"

    @property
    def web_state(self) -> Path:
        return self.root / "data/cache/web.json"  # each web page's ETag/Last-Modified and last good text

    @property
    def chunk_state(self) -> Path:
        return self.root / "data/cache/chunker.json"  # what chunks.jsonl was made with

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "data/embeddings"

    @property
    def vectors(self) -> Path:
        return self.embeddings_dir / "vectors.npy"

    @property
    def vector_ids(self) -> Path:
        return self.embeddings_dir / "ids.json"

    @property
    def embedding_cache(self) -> Path:
        return self.root / "data/cache/embeddings.sqlite"

    @property
    def model_cache(self) -> Path:
        return self.root / "data/cache/models"  # GGUF files converted once to HF folders

    @property
    def query_cache(self) -> Path:
        return self.root / "data/cache/queries.sqlite"

    @property
    def index_manifest(self) -> Path:
        return self.root / "data/index/manifest.json"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "data/metrics"

    def stage_metrics(self, stage: str) -> Path:
        return self.metrics_dir / f"{stage}.json"

    @property
    def refresh_report(self) -> Path:
        return self.metrics_dir / "refresh.json"

    @property
    def profile_report(self) -> Path:
        return self.metrics_dir / "profile.json"  # `ragtune profile`

    @property
    def refresh_history(self) -> Path:
        return self.metrics_dir / "refresh_history.jsonl"  # one line per kb_refresh

    def index_lock(self, collection: str) -> Path:
        return self.root / f"data/locks/index-{collection}.lock"

    @property
    def deepspeed_configs(self) -> Path:
        return self.root / "infra/deepspeed"  # zero2.json, zero3.json, zero3_offload.json

    # --- retrain
    @property
    def train_dir(self) -> Path:
        return self.root / "data/train"  # tokenized train/eval rows + dataset.json

    @property
    def dataset_meta(self) -> Path:
        return self.train_dir / "dataset.json"

    @property
    def heldout_qa(self) -> Path:
        return self.train_dir / "heldout_qa.jsonl"  # qa/raft questions never trained on

    @property
    def train_quality(self) -> Path:
        return self.root / "data/quality/train_report.json"

    @property
    def tokenized_cache(self) -> Path:
        return self.root / "data/cache/tokenized"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def candidate(self) -> Path:
        return self.models / "candidate"  # adapter/ + ragtune.json of the last train

    @property
    def checkpoints(self) -> Path:
        return self.models / "checkpoints/run"

    @property
    def versions(self) -> Path:
        return self.models / "versions"  # every candidate, promoted or not

    @property
    def production(self) -> Path:
        return self.models / "production.json"

    @property
    def lineage(self) -> Path:
        return self.models / "lineage.jsonl"

    @property
    def watch_state(self) -> Path:
        return self.models / "watch.json"  # last data state `watch` emitted for

    @property
    def loss_csv(self) -> Path:
        return self.root / "data/plots/train_loss.csv"

    @property
    def loss_png(self) -> Path:
        return self.root / "data/plots/train_loss.png"


@contextmanager
def file_lock(path: Path, wait_s: float, busy: str) -> Iterator[None]:
    """An exclusive lock across processes (flock: released by the kernel if the holder dies).

    Waits up to wait_s (0 = refuse at once), then raises BusyError(busy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(busy) from None
                time.sleep(0.2)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic(path: Path, write) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    _atomic(path, lambda f: f.write((json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode()))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    def w(f):
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode())

    _atomic(path, w)


def write_npy_rows(path: Path, shape: tuple[int, int], dtype: Any, blocks: Iterable[np.ndarray]) -> None:
    """An .npy file of `shape` written from row blocks in order (what np.load reads back), atomically: a corpus
    of vectors is never held whole."""
    dtype = np.dtype(dtype)

    def w(f) -> None:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype.str, "fortran_order": False, "shape": shape})
        rows = 0
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
            rows += len(block)
        if rows != shape[0]:
            raise ValueError(f"{path}: {rows} rows written for a declared {shape[0]}")

    _atomic(path, w)


def _require(path: Path, stage: str) -> None:
    if not path.exists():
        raise RagtuneError(
            f"{path}: missing input. Run the '{stage}' stage first (ragtune stage {stage}, "
            "dvc repro, or ragtune refresh)."
        )


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, streamed (md5 is what DVC 3 records in dvc.lock)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def read_json(path: Path, stage: str) -> Any:
    _require(path, stage)
    return json.loads(path.read_text(encoding="utf-8"))


def iter_jsonl(path: Path, stage: str) -> Iterator[dict]:
    _require(path, stage)
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_jsonl(path: Path, stage: str) -> list[dict]:
    return list(iter_jsonl(path, stage))


def read_npy(path: Path, stage: str) -> np.ndarray:
    _require(path, stage)
    return np.load(path, mmap_mode="r", allow_pickle=False)  # pages in as read: a corpus of vectors is never held twice
