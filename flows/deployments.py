"""The deployments `ragtune serve` runs: nightly refresh (cron), watch (interval), retrain (event-triggered).

Concurrency: each deployment allows one active run (`concurrency_limit=1`), so there is at most one refresh
per project/collection and one retrain at a time; DVC writes are serialized by tasks/versioning.py's lock.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval

from flows.kb_refresh import kb_refresh
from flows.retrain import retrain
from flows.watch import EVENT, dataset_resource, watch
from tasks.core.config import Params


def build_deployments(root: Path, params: Params) -> list:
    root = Path(root).resolve()
    s = params.schedule
    return [
        kb_refresh.to_deployment(
            name=f"nightly-{params.index.collection}",
            parameters={"root": str(root)},
            concurrency_limit=1,
            schedule=Cron(s.refresh_cron, timezone=s.timezone),
            tags=["ragtune", "kb"],
            description=f"Refresh collection '{params.index.collection}' from {params.ingest.sources}",
        ),
        watch.to_deployment(
            name="training-data",
            parameters={"root": str(root)},
            concurrency_limit=1,
            schedule=Interval(timedelta(seconds=s.watch_interval_s)),
            tags=["ragtune", "model"],
            description=f"Emit {EVENT} when {params.dataset.sources} gains >= {s.min_new_examples} new examples",
        ),
        retrain.to_deployment(
            name="on-new-data",
            parameters={"root": str(root)},
            concurrency_limit=1,
            tags=["ragtune", "model"],
            triggers=[
                DeploymentEventTrigger(
                    name="new training data", expect={EVENT}, match={"prefect.resource.id": dataset_resource(root)}
                )
            ],
            description="Retrain the LoRA adapter when watch reports new data; promote only if better",
        ),
    ]
