import pytest

from tasks.chunk import chunk_documents, point_id, split_sections
from tasks.config import ChunkParams
from tasks.embedder import load_tokenizer
from tasks.errors import ConfigError


def test_sections_keep_heading_paths_and_ignore_code_fences():
    text = "# Top\n\nintro\n\n## Sub\n\n```\n# not a heading\n```\n\n# Other\n## Empty\n### Deep\n\nbody"
    secs = split_sections(text)
    assert [h for h, _ in secs] == [["Top"], ["Top", "Sub"], ["Other", "Empty", "Deep"]]
    assert "# not a heading" in secs[1][1]
    assert secs[2][1].startswith("# Other")  # a heading without body merges into the next section


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")


def test_chunks_respect_token_budget_and_are_deterministic(tokenizer):
    tok, max_len = tokenizer
    assert max_len == 256
    para = "Heron learns a weekly schedule from manual adjustments and pre-heats before people arrive. "
    doc = {"doc_id": "d.md", "source": "s", "path": "d.md", "content_hash": "h",
           "text": "# Guide\n\n" + "\n\n".join(f"Step {i}. " + para * 3 for i in range(12))}
    params = ChunkParams(size_tokens=64, overlap_tokens=8)
    chunks, stats = chunk_documents([doc], tok, params, max_len)
    assert len(chunks) > 5 and stats["tokens_max"] <= 64 and stats["repeated_chunks_skipped"] == 0
    assert all(c.heading_path == ["Guide"] for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    again, _ = chunk_documents([doc], tok, params, max_len)
    assert [c.point_id for c in again] == [c.point_id for c in chunks]
    assert chunks[0].point_id == point_id("d.md", chunks[0].chunk_hash)


def test_chunk_larger_than_model_window_is_refused(tokenizer):
    tok, max_len = tokenizer
    with pytest.raises(ConfigError, match="exceeds the embedding model's max_seq_length=256"):
        chunk_documents([], tok, ChunkParams(size_tokens=512, overlap_tokens=0), max_len)
