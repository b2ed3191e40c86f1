"""Prefect flow `watch`: detect new training data and emit `ragtune.data.changed` (the retrain trigger)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.events import emit_event

from tasks.core.config import ConfigError, load_params
from tasks.core.workspace import Layout
from tasks.train.watch import detect_change, remember_emitted

EVENT = "ragtune.data.changed"


def dataset_resource(root: Path) -> str:
    """The event's resource id; the retrain deployment of this project matches exactly this id."""
    return f"ragtune.dataset.{Path(root).resolve().name}"


@flow(name="watch", log_prints=True)
def watch(root: str = ".") -> dict:
    """Compare the training data with the production adapter's; emit one event per new data state."""
    ws = Layout(Path(root).resolve())
    change = detect_change(ws, load_params(ws.root / "params.yaml"))
    get_run_logger().info("watch: %s", change["reason"])
    if change["emit"]:
        payload = {
            k: change[k]
            for k in ("dataset", "data_version", "examples", "new_examples", "removed_examples", "production_version")
        }
        event = emit_event(
            EVENT,
            resource={"prefect.resource.id": dataset_resource(ws.root), "prefect.resource.name": change["dataset"]},
            payload=payload,
        )
        if event is None:
            raise ConfigError("no Prefect API to emit events to: start `ragtune server`, or export PREFECT_API_URL.")
        remember_emitted(ws, change)
    return {k: v for k, v in change.items() if k != "data_hash"}
