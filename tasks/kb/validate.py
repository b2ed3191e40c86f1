"""Validate: a Great Expectations (GX Core 1.x) gate over the cleaned documents and the ingest outcome."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.config import ValidateParams
from tasks.core.quality import run_suites

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("ragtune")

SUITE = "ragtune_documents"
# Statuses of an input file in the "inputs" table; the gate bounds the share of each bad one.
STATUSES = ("kept", "empty", "duplicate", "undecodable", "skipped")


def build_tables(kept: list[dict], drops: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(documents: one row per kept document, inputs: one row per ingested document with its status)."""
    import pandas as pd  # heavy (0.35 s): only the gate builds frames

    documents = pd.DataFrame(
        {
            "doc_id": [d["doc_id"] for d in kept],
            "source": [d["source"] for d in kept],
            "text": [d["text"] for d in kept],
        }
    )
    inputs = pd.DataFrame(
        {
            "doc_id": [d["doc_id"] for d in kept] + [d["doc_id"] for d in drops],
            "status": ["kept"] * len(kept) + [d["status"] for d in drops],
        }
    )
    return documents, inputs


def expectations(params: ValidateParams) -> dict[str, list]:
    """The suite, per table. Share limits become `mostly` on a not-in-set expectation."""
    import great_expectations.expectations as gxe

    def share_cap(status: str, cap: float):
        return gxe.ExpectColumnValuesToNotBeInSet(
            column="status", value_set=[status], mostly=round(1 - cap, 6), meta={"share": status, "max_share": cap}
        )

    return {
        "documents": [
            gxe.ExpectTableRowCountToBeBetween(min_value=params.min_documents),
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=params.min_chars, max_value=params.max_chars
            ),
            gxe.ExpectColumnValuesToNotBeNull(column="doc_id"),
            gxe.ExpectColumnValuesToBeUnique(column="doc_id"),
        ],
        "inputs": [
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)),
            share_cap("empty", params.max_empty_share),
            share_cap("duplicate", params.max_duplicate_share),
            share_cap("undecodable", params.max_undecodable_share),
        ],
    }


def run_gate(documents: pd.DataFrame, inputs: pd.DataFrame, params: ValidateParams, gx_root: Path) -> dict:
    """The documents gate of kb_refresh: suites over the kept documents and the ingest outcome."""
    exps = expectations(params)
    report = run_suites(
        gx_root,
        SUITE,
        {"documents": (documents, exps["documents"]), "inputs": (inputs, exps["inputs"])},
        id_column="doc_id",
    )
    counts = inputs["status"].value_counts().to_dict() if len(inputs) else {}
    n = max(len(inputs), 1)
    report.update(
        documents=int(len(documents)),
        inputs=int(len(inputs)),
        shares={s: round(counts.get(s, 0) / n, 4) for s in STATUSES},
    )
    return report
