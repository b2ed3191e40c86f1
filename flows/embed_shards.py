"""Embedding past one process: the embed stage's cache misses, in coarse shards, as a Prefect map on Dask.

Only the misses travel (the stage resolves the cache first), a shard is `embed.shard_size` chunks (tens of tasks for
the Prefect server, not thousands), each worker process loads the model once, and the vectors come back in memory:
384 float32 per chunk is 3 MB per 2048-chunk shard, which Dask moves easily and which needs no shared disk between
the workers and the machine that runs the flow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.runtime import log_level
from tasks.core.config import EmbedParams
from tasks.core.errors import ConfigError
from tasks.kb.embed import MapShards, ShardResult, encode_shard

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner


@task(name="embed_shard", task_run_name="embed_shard-{index}", cache_policy=NO_CACHE, persist_result=False)
def embed_shard(index: int, texts: list[str], params: EmbedParams) -> ShardResult:
    return encode_shard(index, texts, params)


class _SlowWorkerExit(logging.Filter):
    """A worker process that imported torch and sentence-transformers can take longer than the nanny's 4 s to
    exit once the last shard is back (interpreter teardown, seconds on a busy machine); the nanny then kills it,
    which loses nothing. Its warning about that is shown with --verbose only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Worker process still alive after")


def quiet_worker_exit() -> None:
    if log_level() > logging.INFO:
        nanny = logging.getLogger("distributed.nanny")
        if not any(isinstance(f, _SlowWorkerExit) for f in nanny.filters):
            nanny.addFilter(_SlowWorkerExit())


def dask_runner(params: EmbedParams) -> DaskTaskRunner:
    """The scheduler at embed.dask_address, else a LocalCluster of embed.workers single-threaded processes (Dask
    then runs torch with one thread per worker); no dashboard, and its logs only with --verbose."""
    from prefect_dask import DaskTaskRunner

    if params.dask_address:
        return DaskTaskRunner(address=params.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": params.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "silence_logs": log_level(),
        }
    )


def connect(runner: DaskTaskRunner, address: str) -> None:
    """Reach the scheduler and wait for a worker, or say what to start."""
    try:
        runner.client.wait_for_workers(1, timeout=60)
    except OSError as exc:  # nothing answers, or no worker joined (TimeoutError is an OSError too)
        raise ConfigError(
            f"embed.dask_address: no Dask scheduler with a worker at {address} ({exc}). Start one (`dask scheduler`, "
            f"then `dask worker {address}` from this project's venv), or unset embed.dask_address."
        ) from exc


def shard_mapper(params: EmbedParams) -> MapShards | None:
    """How the embed stage runs its shards: None (in its own process) unless embed.workers > 1 or
    embed.dask_address is set. The cluster starts only when a shard needs encoding and stops when all are back."""
    if params.workers == 1 and not params.dask_address:
        return None

    def map_shards(shards: list[list[str]]) -> Iterator[ShardResult]:
        quiet_worker_exit()
        with dask_runner(params) as runner:
            if params.dask_address:
                connect(runner, params.dask_address)
            futures = runner.map(
                embed_shard, {"index": range(len(shards)), "texts": shards, "params": unmapped(params)}
            )
            for future in as_completed(futures):  # the stage's progress row advances per finished shard
                yield future.result()

    return map_shards
