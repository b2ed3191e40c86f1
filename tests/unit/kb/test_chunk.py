from pathlib import Path

import pytest

from tasks.core.config import ChunkParams, load_params
from tasks.core.errors import ConfigError
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout, read_json, read_jsonl, write_json, write_jsonl
from tasks.kb import stages
from tasks.kb.chunk import chunk_documents, point_id, split_sections
from tasks.kb.embedder import load_embedding_tokenizer


def test_sections_keep_heading_paths_and_ignore_code_fences():
    text = "# Top\n\nintro\n\n## Sub\n\n```\n# not a heading\n```\n\n# Other\n## Empty\n### Deep\n\nbody"
    secs = split_sections(text)
    assert [h for h, _ in secs] == [["Top"], ["Top", "Sub"], ["Other", "Empty", "Deep"]]
    assert "# not a heading" in secs[1][1]
    assert secs[2][1].startswith("# Other")  # a heading without body merges into the next section


@pytest.fixture(scope="module")
def tokenizer():
    return load_embedding_tokenizer("sentence-transformers/all-MiniLM-L6-v2")


def test_chunks_respect_token_budget_and_are_deterministic(tokenizer):
    tok, max_len = tokenizer
    assert max_len == 256
    para = "Heron learns a weekly schedule from manual adjustments and pre-heats before people arrive. "
    doc = {
        "doc_id": "d.md",
        "source": "s",
        "path": "d.md",
        "content_hash": "h",
        "text": "# Guide\n\n" + "\n\n".join(f"Step {i}. " + para * 3 for i in range(12)),
    }
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


def test_unchanged_documents_reuse_their_chunks_only_when_safe(tmp_path):
    """A re-run takes unchanged documents' chunks from the last run: same chunks as a fresh split, and no reuse
    after a chunker change or when chunks.jsonl no longer matches the state written with it."""
    import shutil

    repo = Path(__file__).resolve().parents[3]
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    ws = Layout(tmp_path)
    para = "The gateway validates each state message and forwards it to the device service. "
    docs = [
        {
            "doc_id": f"d{i}.md",
            "source": "s",
            "path": f"d{i}.md",
            "content_hash": f"h{i}",
            "text": f"# Doc {i}\n\n" + para * (5 + 9 * i),
        }
        for i in range(4)
    ]
    write_jsonl(ws.clean_documents, docs)
    write_json(ws.quality_report, {"success": True})
    params = load_params(tmp_path / "params.yaml")

    assert stages.run_chunk(StageContext(ws, params))["documents_reused"] == 0
    fresh = read_jsonl(ws.chunks, "chunk")
    assert stages.run_chunk(StageContext(ws, params))["documents_reused"] == 4
    assert read_jsonl(ws.chunks, "chunk") == fresh

    docs[1] = {**docs[1], "text": docs[1]["text"] + "\n\nA new closing paragraph.", "content_hash": "h1b"}
    write_jsonl(ws.clean_documents, docs)
    assert stages.run_chunk(StageContext(ws, params))["documents_reused"] == 3
    mixed = read_jsonl(ws.chunks, "chunk")
    (ws.chunk_state).unlink()
    stages.run_chunk(StageContext(ws, params))
    assert read_jsonl(ws.chunks, "chunk") == mixed  # reuse gives exactly what a full split gives

    smaller = load_params(tmp_path / "params.yaml", ["chunk.size_tokens=64"])
    assert stages.run_chunk(StageContext(ws, smaller))["documents_reused"] == 0  # another chunker key: split again
    with ws.chunks.open("a") as f:  # the file changed behind the state's back (a DVC checkout, an edit)
        f.write("\n")
    assert stages.run_chunk(StageContext(ws, smaller))["documents_reused"] == 0
    assert stages.run_chunk(StageContext(ws, smaller))["documents_reused"] == 4  # and the state is whole again
    assert read_json(ws.chunk_state, "chunk")["sha256"]
