"""Served deployments against a real Prefect server: cron schedule, and new training data -> watch -> event ->
the retrain deployment runs by itself; unchanged data triggers nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.data import INSTRUCTIONS

from .conftest import stop

pytestmark = pytest.mark.slow  # a whole pipeline, a real server or a trained model


def api(url: str, method: str, path: str, body: dict | None = None):
    r = httpx.request(method, f"{url}{path}", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def retrain_runs(url: str, deployment_id: str) -> list[dict]:
    return api(url, "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"`ragtune serve` exited while waiting for {what}")
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def ragtune(env: dict, root: Path, *args: str) -> dict:
    proc = subprocess.run(
        ["ragtune", *args, "--params", str(root / "params.yaml")],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_schedule_and_event_triggered_retrain(workspace, tiny_causal, prefect_server, tmp_path):
    url, env = prefect_server
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_causal)
    params["dataset"].update(INSTRUCTIONS)
    params["train"].update(max_steps=4, save_steps=100)
    params["schedule"].update(refresh_cron="30 3 * * *", timezone="Europe/Paris", watch_interval_s=3600)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        ["ragtune", "serve", "--params", str(workspace / "params.yaml")],
        env=env,
        cwd=workspace,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        nightly = wait_for(lambda: _deployment(url, "kb_refresh", "nightly-ragtune"), 120, "deployments", serve)
        schedule = nightly["schedules"][0]["schedule"]
        assert schedule["cron"] == "30 3 * * *" and schedule["timezone"] == "Europe/Paris"
        assert nightly["global_concurrency_limit"]["limit"] == 1, "one refresh of this collection at a time"
        on_new_data = wait_for(lambda: _deployment(url, "retrain", "on-new-data"), 60, "retrain deployment")
        wait_for(lambda: api(url, "POST", "/automations/filter", {}), 60, "the retrain trigger's automation")

        first = ragtune(env, workspace, "watch", "--json")  # no production adapter yet: all examples are new
        assert first["emit"] and first["new_examples"] == 28
        runs = wait_for(
            lambda: [r for r in retrain_runs(url, on_new_data["id"]) if r["state_type"] == "COMPLETED"],
            300,
            "the first triggered retrain",
            serve,
        )
        assert len(runs) == 1 and (workspace / "models/production.json").exists()

        unchanged = ragtune(env, workspace, "watch", "--json")
        assert not unchanged["emit"] and unchanged["new_examples"] == 0
        time.sleep(8)
        assert len(retrain_runs(url, on_new_data["id"])) == 1, "unchanged data must trigger nothing"

        with (workspace / "data/sample/train/instructions.jsonl").open("a") as f:
            for i in range(3):
                f.write(json.dumps({"instruction": f"What is error E{i}4?", "output": f"Sensor fault {i}."}) + "\n")
        changed = ragtune(env, workspace, "watch", "--json")
        assert changed["emit"] and changed["new_examples"] == 3
        wait_for(
            lambda: len([r for r in retrain_runs(url, on_new_data["id"]) if r["state_type"] == "COMPLETED"]) == 2,
            300,
            "the second triggered retrain",
            serve,
        )
    finally:
        stop(serve, 30)
        log.close()


def _deployment(url: str, flow: str, name: str) -> dict | None:
    try:
        return api(url, "GET", f"/deployments/name/{flow}/{name}")
    except httpx.HTTPStatusError:
        return None
