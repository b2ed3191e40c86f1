"""Bad input: every case ends with a recorded reason (or a clear error), never a traceback or a partial write."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.core.config import ConfigError, load_params
from tasks.core.errors import GateFailed, SourceError
from tasks.core.stage import StageContext
from tasks.core.workspace import Layout
from tasks.train.stages import run_build_dataset
from tests.data import set_params

from .conftest import refresh

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

GOOD = "Heron thermostats keep a steady temperature and learn the household schedule within a week. " * 3
TOPICS = [  # the good files are different documents (the same text with a number changed is a near-duplicate)
    "Larkspur pumps run quietly at night and report their pressure to the hub every minute.",
    "Returns are accepted within thirty days when the original packaging is kept intact.",
    "The installer asks for the Wi-Fi password once and stores it encrypted on the device.",
    "Firmware updates download overnight and install after the household has been away an hour.",
]


def make_pdf_without_text(path: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    with path.open("wb") as f:
        writer.write(f)


@pytest.fixture
def messy(tmp_path) -> Path:
    root = tmp_path / "messy"
    src = root / "docs"
    src.mkdir(parents=True)
    (root / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    for i in range(4):
        (src / f"good-{i}.md").write_text(f"# Good {i}\n\n{TOPICS[i] * 3} Model {i}.")
    (src / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (src / "latin.txt").write_bytes(("Caf\xe9 cr\xe8me and na\xefve r\xe9sum\xe9 notes. " * 5).encode("latin-1"))
    (src / "broken-utf8.md").write_bytes(b"# Notes\n\nValid start \xff\xfe\xfa then more text. " + GOOD.encode())
    (src / "empty.txt").write_text("")
    (src / "scripts-only.html").write_text(
        "<html><head><style>p{}</style><script>var x=1;</script></head><body><script>alert(1)</script></body></html>"
    )
    make_pdf_without_text(src / "blank.pdf")
    (src / "copy.md").write_text(f"# Good 0\n\n{TOPICS[0] * 3} Model 0.")
    (src / "records.jsonl").write_text(json.dumps({"id": "a", "text": GOOD + " jsonl"}) + "\n{not json\n")
    with (src / "huge.txt").open("w") as f:  # 50 MB: recorded as too large without being read
        block = "x" * 1023 + "\n"
        for _ in range(50 * 1024):
            f.write(block)
    outside = root / "outside.md"
    outside.write_text(GOOD)
    os.symlink(outside, src / "link-out.md")
    return root


def test_every_bad_file_gets_a_reason_and_memory_stays_bounded(messy):
    overrides = (
        "ingest.sources=[docs]",
        "validate.max_empty_share=1",
        "validate.max_duplicate_share=1",
        "validate.max_undecodable_share=1",
    )
    import tasks.kb.ingest  # noqa: F401  (imports are not what we measure)

    tracemalloc.start()
    refresh(messy, *overrides, stages=("ingest",))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20, f"ingest peaked at {peak / 2**20:.0f} MB of Python allocations (a 50 MB file is present)"
    refresh(messy, *overrides, stages=("clean", "validate"))
    ws = Layout(messy)
    raw = {d["doc_id"]: d for d in map(json.loads, ws.raw_documents.read_text().splitlines())}
    drops = {d["doc_id"]: d for d in map(json.loads, ws.clean_drops.read_text().splitlines())}
    kept = {d["doc_id"] for d in map(json.loads, ws.clean_documents.read_text().splitlines())}

    def outcome(doc_id):
        return drops[doc_id]["status"] if doc_id in drops else ("kept" if doc_id in kept else raw[doc_id]["status"])

    assert outcome("binary.txt") == "undecodable" and "binary" in drops["binary.txt"]["reason"].lower()
    assert outcome("huge.txt") == "undecodable" and "too large" in drops["huge.txt"]["reason"]
    assert outcome("empty.txt") == "empty"
    assert outcome("scripts-only.html") == "empty"
    assert outcome("blank.pdf") in ("empty", "undecodable") and drops["blank.pdf"]["reason"]
    (dropped,) = [d for d in ("copy.md", "good-0.md") if d in drops]  # one of the identical pair, naming the other
    other = ({"copy.md", "good-0.md"} - {dropped}).pop()
    assert drops[dropped]["status"] == "duplicate" and other in drops[dropped]["reason"]
    assert outcome("link-out.md") == "skipped" and "outside the source root" in drops["link-out.md"]["reason"]
    assert outcome("latin.txt") == "kept" and raw["latin.txt"]["encoding"]
    assert outcome("broken-utf8.md") == "kept"  # decoded with a fallback encoding, recorded in raw
    bad_line = [d for d in drops.values() if d["doc_id"].startswith("records.jsonl") and d["status"] == "undecodable"]
    assert bad_line and "line 2" in bad_line[0]["reason"]
    report = json.loads(ws.quality_report.read_text())
    assert report["success"] and report["inputs"] == len(raw)
    assert all(d["reason"] for d in drops.values()), "every drop names its reason"


def test_default_gate_stops_a_messy_source_before_anything_is_indexed(messy):
    with pytest.raises(GateFailed, match="data quality gate failed"):
        refresh(messy, "ingest.sources=[docs]", stages=("ingest", "clean", "validate"))
    assert not Layout(messy).chunks.exists() and not (messy / "data/store").exists()


def test_missing_source_and_bad_params_are_one_clear_line(messy):
    with pytest.raises(SourceError, match="no-such-folder"):
        refresh(messy, "ingest.sources=[no-such-folder]", stages=("ingest",))
    with pytest.raises(ConfigError, match="unknown key 'chunk_size'"):
        load_params(messy / "params.yaml", ["chunk.chunk_size=3"])
    set_params(messy / "params.yaml", chunk__size_tokens="lots")
    result = CliRunner().invoke(app, ["stage", "chunk", "--params", str(messy / "params.yaml")])
    assert result.exit_code == 3 and "chunk.size_tokens" in result.output and "Traceback" not in result.output
    (messy / "params.yaml").write_text("ingest:\n  sources: [docs]\n  colour: blue\n")
    result = CliRunner().invoke(app, ["stage", "ingest", "--params", str(messy / "params.yaml")])
    assert result.exit_code == 3 and "ingest.colour: unknown key" in " ".join(result.output.split())


def test_training_file_with_missing_fields_or_unknown_labels_fails_the_gate(messy, tiny_cls):
    train = messy / "tickets.jsonl"
    rows = [{"text": f"charged twice on invoice {i}", "label": "billing"} for i in range(6)]
    rows += [{"text": f"wifi drops at night {i}", "label": "connectivity"} for i in range(6)]
    rows += [{"text": "the app is purple", "label": "colour"}, {"label": "billing"}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))

    params = load_params(
        messy / "params.yaml",
        [
            f"model.base={tiny_cls}",
            "model.task=seq_cls",
            "dataset.format=auto",
            "dataset.sources=[tickets.jsonl]",
            "dataset.labels=[billing, connectivity]",
        ],
    )
    with pytest.raises(GateFailed) as err:
        run_build_dataset(StageContext(Layout(messy), params))
    message = " ".join(str(err.value).split())
    assert "tickets.jsonl:13" in message and "labels outside dataset.labels" in message
    assert "tickets.jsonl:14" in message and "nothing was trained" in message
    assert not (messy / "data/train").exists()
