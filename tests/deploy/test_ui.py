"""The Prefect UI in headless Chromium (Debian's chromium driven by playwright; no browser download):
a refresh run and a compare run against a real server show up with their task runs and artifacts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def test_refresh_run_and_its_artifacts_are_visible_in_the_ui(workspace, prefect_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (`make test` does this)")
    url, env = prefect_server
    proc = subprocess.run(
        ["ragtune", "refresh", "--json", "--params", str(workspace / "params.yaml")],
        env=env,
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    qa = tmp_path / "questions.jsonl"  # six questions: rag answers them with the packaged SmolLM2, offline
    qa.write_text(
        "".join(
            (Path(__file__).resolve().parents[2] / "data/sample/questions.jsonl")
            .read_text()
            .splitlines(keepends=True)[:6]
        )
    )
    proc = subprocess.run(
        [
            "ragtune",
            "compare",
            "--qa",
            str(qa),
            "--json",
            "compare.modes=[rag]",
            "--params",
            str(workspace / "params.yaml"),
        ],
        env=env,
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    runs = httpx.post(f"{url}/flow_runs/filter", json={"flow_runs": {"name": {}}}, timeout=10).json()
    mine = [r for r in runs if r["state_type"] == "COMPLETED" and r["parameters"].get("root") == str(workspace)]
    run = next(r for r in mine if "qa_file" not in r["parameters"])
    compare_run = next(r for r in mine if "qa_file" in r["parameters"])
    ui = url.removesuffix("/api")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/runs", wait_until="networkidle")
        expect(page.get_by_text(run["name"]).first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)

        page.goto(f"{ui}/runs/flow-run/{run['id']}", wait_until="networkidle")
        page.screenshot(path=str(tmp_path / "flow-run.png"), full_page=True)
        expect(page.get_by_text("upsert_points").first).to_be_visible(timeout=60_000)  # the task graph/list
        page.get_by_text("Artifacts", exact=True).first.click()
        for key in ("kb-refresh-report", "kb-quality", "kb-data-docs"):
            expect(page.get_by_text(key).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "flow-run-artifacts.png"), full_page=True)

        page.goto(f"{ui}/runs/flow-run/{compare_run['id']}", wait_until="networkidle")
        expect(page.get_by_text("answer_questions[rag]").first).to_be_visible(timeout=60_000)
        page.get_by_text("Artifacts", exact=True).first.click()
        for key in ("compare-modes", "compare-summary"):
            expect(page.get_by_text(key).first).to_be_visible(timeout=30_000)
        page.get_by_text("compare-modes").first.click()
        expect(page.get_by_text("SmolLM2").first).to_be_visible(timeout=30_000)  # the summary names the generator
        page.screenshot(path=str(tmp_path / "compare-table.png"), full_page=True)
        browser.close()
    assert (tmp_path / "runs.png").stat().st_size > 10_000
