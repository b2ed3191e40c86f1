"""Docs that cannot go stale: benchmark tables are rendered from the results JSON, and no typed test counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.report import SCALE_BEGIN, SCALE_END, markdown, results_block, scale_block

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_tables_in_the_docs_are_the_rendering_of_results_json():
    rendered = markdown(json.loads((REPO / "benchmarks/RESULTS.json").read_text()))
    assert results_block((REPO / "docs/benchmarks.md").read_text()) == rendered, (
        "docs/benchmarks.md differs from benchmarks/RESULTS.json: run `python -m benchmarks.report "
        "benchmarks/RESULTS.json docs/benchmarks.md` (or `make bench BENCH_ARGS=--publish`)"
    )
    assert (REPO / "benchmarks/RESULTS.md").read_text() == rendered


def test_the_readme_scale_table_is_the_rendering_of_results_json():
    results = json.loads((REPO / "benchmarks/RESULTS.json").read_text())
    readme = (REPO / "README.md").read_text()
    block = readme.partition(SCALE_BEGIN)[2].partition(SCALE_END)[0].strip("\n") + "\n"
    assert block == scale_block(results), (
        "README.md's scale table differs from benchmarks/RESULTS.json: run `python -m benchmarks.report "
        "benchmarks/RESULTS.json docs/benchmarks.md README.md`"
    )


def test_readme_is_a_front_door_and_no_doc_types_test_counts():
    readme = (REPO / "README.md").read_text()
    assert readme.startswith("```\nmake demo") and len(readme.splitlines()) <= 150
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        typed = re.findall(r"\b\d+ (?:passed|skipped|failed)\b", page.read_text())
        assert not typed, f"{page.name} types test counts {typed}: they go stale; quote them in a closing note"


def test_every_relative_link_in_the_docs_resolves():
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: link to missing {target}"
