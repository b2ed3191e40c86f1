"""kb_refresh with embed.workers=2: a Prefect map of shards on a 2-worker LocalCluster, against a single-process run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from prefect import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

from flows.kb_refresh import kb_refresh
from tasks.core.workspace import Layout

pytestmark = pytest.mark.slow

SMALL = ["embed.batch_size=8", "embed.shard_size=8"]  # a dozen shards of one batch each on the sample corpus


def test_dask_shards_give_the_single_process_vectors_and_the_cache_serves_a_rerun(workspace, tmp_path):
    alone = tmp_path / "alone"
    shutil.copytree(workspace, alone)

    # Dask runs torch with one thread per worker; MKL's matrix products can differ in the last bit between thread
    # counts (not between shardings), so the reference run uses one thread too (docs/kb-refresh.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kb_refresh(root=str(alone), overrides=SMALL)
    finally:
        torch.set_num_threads(threads)
    sharded = kb_refresh(root=str(workspace), overrides=[*SMALL, "embed.workers=2"])

    one, two = Layout(alone), Layout(workspace)
    stats = json.loads(two.stage_metrics("embed").read_text())
    assert stats["embedded"] == sharded["chunks"]["total"] > 48 and stats["shards"] == -(-stats["embedded"] // 8)
    assert np.array_equal(np.load(two.vectors), np.load(one.vectors))  # point for point, bit for bit
    assert two.vector_ids.read_text() == one.vector_ids.read_text()
    assert sharded["points"]["in_index"] == stats["chunks"]

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="embed_shard-")))
    assert len(runs) == stats["shards"] and all(r.state and r.state.is_completed() for r in runs)

    again = kb_refresh(root=str(workspace), overrides=[*SMALL, "embed.workers=2"])
    stats = json.loads(two.stage_metrics("embed").read_text())
    assert again["chunks"]["embedded"] == 0 and stats["reused"] == stats["chunks"] and stats["shards"] == 0
    assert np.array_equal(np.load(two.vectors), np.load(one.vectors))
