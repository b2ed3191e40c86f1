"""The embed stage's shard logic (tasks/kb/embed.py): shard bounds, the same batches in both paths, the cache in the
parent, vectors assembled in chunk order. The real Dask map runs in tests/flows/test_embed_on_dask.py."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tasks.core.config import EmbedParams
from tasks.core.errors import ConfigError, RagtuneError
from tasks.kb.embed import (
    EmbeddingCache,
    ShardResult,
    embed_chunks,
    embed_chunks_sharded,
    encode_batches,
    plan_embedding,
    shard_bounds,
)
from tasks.kb.embedder import embed_key, make_embedder, model_fingerprint
from tests.fakes import HashEmbedder

KEY = "model-key"


class RecordingEmbedder(HashEmbedder):
    """HashEmbedder that remembers every batch it was given."""

    device = "cpu"

    def __init__(self, batch_size: int):
        super().__init__(dim=16)
        self.batch_size = batch_size
        self.batches: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return super().embed(texts)


def chunks_of(n: int, seed: int = 0) -> list[dict]:
    """n chunks of varied lengths (many ties), the last two repeating the first text (one vector, three chunks)."""
    rng = random.Random(seed)
    texts = [f"t{i:03d} " + " ".join(f"w{rng.randrange(9)}" for _ in range(rng.randrange(1, 6))) for i in range(n - 2)]
    texts += texts[:1] * 2
    return [{"point_id": f"p{i}", "chunk_hash": f"h-{t}", "text": t} for i, t in enumerate(texts)]


def mapper(embedder: RecordingEmbedder, key: str = KEY, calls: list | None = None):
    """A stand-in for the flow's Dask map: encodes each shard like encode_shard, and yields them out of order."""

    def map_shards(shards: list[list[str]]) -> Iterator[ShardResult]:
        if calls is not None:
            calls.append(shards)
        for i in reversed(range(len(shards))):
            yield ShardResult(i, encode_batches(embedder, shards[i], embedder.batch_size), key, "cpu", 0.0)

    return map_shards


@pytest.mark.parametrize(
    ("n", "shard_size", "batch", "expected"),
    [
        (0, 8, 4, []),
        (10, 8, 4, [(0, 8), (8, 10)]),
        (10, 5, 4, [(0, 8), (8, 10)]),  # rounded up to whole batches
        (10, 1, 4, [(0, 4), (4, 8), (8, 10)]),
        (12, 100, 4, [(0, 12)]),
        (12, 0, 4, [(0, 4), (4, 8), (8, 12)]),
    ],
)
def test_shards_are_whole_batches_covering_everything(n, shard_size, batch, expected):
    assert shard_bounds(n, shard_size, batch) == expected


def test_sharded_vectors_equal_the_single_process_ones_and_use_the_same_batches(tmp_path: Path):
    chunks = chunks_of(300)
    single = RecordingEmbedder(batch_size=8)
    stats = embed_chunks(chunks, lambda: single, EmbeddingCache(tmp_path / "a.sqlite"), KEY, tmp_path / "a.npy")
    vectors = np.load(tmp_path / "a.npy")

    sharded = RecordingEmbedder(batch_size=8)
    progress: list[tuple[int, int]] = []
    cache = EmbeddingCache(tmp_path / "b.sqlite")
    sharded_stats = embed_chunks_sharded(
        iter(chunks), mapper(sharded), cache, KEY, tmp_path / "b.npy", 8, 20, 1, lambda *a: progress.append(a)
    )
    got = np.load(tmp_path / "b.npy")
    assert np.array_equal(got, vectors) and got.dtype == np.float32 and got.shape == (300, 16)
    assert sorted(sharded.batches) == sorted(single.batches)  # every forward pass saw the same texts
    assert sorted(map(len, sharded.batches)) == [2] + [8] * 37  # whole batches but the very last
    assert stats["embedded"] == sharded_stats["embedded"] == 298 and sharded_stats["reused"] == 2
    assert sharded_stats["shards"] == 13 and sharded_stats["dim"] == 16 and stats["shards"] == 0
    assert progress[0] == (0, 298) and progress[-1] == (298, 298) and len(progress) == 14


def test_shards_shrink_so_that_every_worker_gets_several(tmp_path: Path):
    calls: list = []
    embed_chunks_sharded(
        chunks_of(202),
        mapper(RecordingEmbedder(8), calls=calls),
        EmbeddingCache(tmp_path / "e"),
        KEY,
        tmp_path / "v.npy",
        8,
        2048,
        3,
    )
    assert [len(s) for s in calls[0]] == [24] * 8 + [8]  # 200 / (3 workers * 4) = 17, rounded up to whole batches


def test_the_parent_owns_the_cache_and_sends_only_misses(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    chunks = chunks_of(40)
    calls: list = []
    embed_chunks_sharded(chunks, mapper(RecordingEmbedder(4), calls=calls), cache, KEY, tmp_path / "1.npy", 4, 8)
    assert len(cache.get_many(KEY, [c["chunk_hash"] for c in chunks])) == 38  # written by the parent

    calls.clear()
    stats = embed_chunks_sharded(
        chunks, mapper(RecordingEmbedder(4), calls=calls), cache, KEY, tmp_path / "2.npy", 4, 8
    )
    assert calls == [] and stats["embedded"] == 0 and stats["reused"] == 40 and stats["shards"] == 0
    assert np.array_equal(np.load(tmp_path / "2.npy"), np.load(tmp_path / "1.npy")) and stats["dim"] == 16

    extra = [*chunks, {"point_id": "new", "chunk_hash": "h-new", "text": "a brand new text"}]
    stats = embed_chunks_sharded(extra, mapper(RecordingEmbedder(4), calls=calls), cache, KEY, tmp_path / "3.npy", 4, 8)
    assert calls == [[["a brand new text"]]] and stats["embedded"] == 1 and stats["shards"] == 1


def test_a_worker_with_other_model_files_is_refused(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    with pytest.raises(RagtuneError, match="model files differ.*same venv"):
        embed_chunks_sharded(chunks_of(10), mapper(RecordingEmbedder(4), key="other"), cache, KEY, tmp_path / "v", 4, 8)
    assert not (tmp_path / "v").exists()
    assert cache.get_many(KEY, [c["chunk_hash"] for c in chunks_of(10)]) == {}


def test_a_short_shard_is_refused(tmp_path: Path):
    def short(shards: list[list[str]]) -> Iterator[ShardResult]:
        yield ShardResult(0, np.zeros((len(shards[0]) - 1, 16), np.float32), KEY, "cpu", 0.0)

    with pytest.raises(RagtuneError, match="shard 0 returned 3 vectors for 4"):
        embed_chunks_sharded(chunks_of(10), short, EmbeddingCache(tmp_path / "emb.sqlite"), KEY, tmp_path / "v", 4, 8)


def test_nothing_to_embed(tmp_path: Path):
    stats = embed_chunks_sharded(
        [], mapper(RecordingEmbedder(4)), EmbeddingCache(tmp_path / "e"), KEY, tmp_path / "v.npy", 4, 8
    )
    assert np.load(tmp_path / "v.npy").shape == (0, 0) and stats["embedded"] == 0 and stats["chunks_per_s"] is None


def test_chunks_stream_through_in_windows_and_only_misses_keep_their_text(tmp_path: Path, monkeypatch):
    """The plan looks chunks up a window at a time and keeps no cache hit's text; the matrix is written from the
    cache in windows too, and equals the one-window result."""
    chunks = chunks_of(50)
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    embed_chunks(chunks[:20], lambda: RecordingEmbedder(4), cache, KEY, tmp_path / "first.npy")
    whole = embed_chunks(chunks, lambda: RecordingEmbedder(4), EmbeddingCache(tmp_path / "o"), KEY, tmp_path / "1.npy")

    monkeypatch.setattr("tasks.kb.embed.PLAN_WINDOW", 7)
    plan = plan_embedding(iter(chunks), cache, KEY)
    assert set(plan.texts) == set(plan.missing) == {c["chunk_hash"] for c in chunks[20:48]}
    assert len(plan.hashes) == 50 and plan.hashes[48:] == [chunks[0]["chunk_hash"]] * 2  # repeats stay in place

    windowed = embed_chunks(iter(chunks), lambda: RecordingEmbedder(4), cache, KEY, tmp_path / "2.npy")
    assert windowed["embedded"] == 28 and windowed["reused"] == 22 and whole["embedded"] == 48
    assert np.array_equal(np.load(tmp_path / "2.npy"), np.load(tmp_path / "1.npy"))


def test_the_torch_key_is_the_one_caches_were_made_with_and_int8_has_its_own():
    torch, int8 = EmbedParams(backend="torch"), EmbedParams(backend="openvino-int8")
    assert embed_key(torch) == model_fingerprint(torch.model, True)  # embedding caches from before backends
    assert embed_key(int8) != embed_key(torch)
    with pytest.raises(ConfigError, match="embed.backend=torch"):
        make_embedder(EmbedParams(backend="openvino-int8", device="cuda"))
