"""UTC time stamps: kb run versions and tags, model version names, and 'at' fields in records."""

from __future__ import annotations

from datetime import UTC, datetime

STAMP = r"\d{8}T\d{6}Z"  # what utc_stamp() writes, as a regex (ragtune's run-versioned Qdrant collections)


def utc_stamp() -> str:
    """Compact, sortable, tag-safe: 20261121T020000Z (kb run versions, kb/<stamp> tags)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def utc_iso() -> str:
    """ISO 8601 to the second, with the offset: 2026-11-21T02:00:00+00:00 (lineage, history, tag messages)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def utc_version() -> str:
    """A model version name, sortable to the millisecond: v20261121-020000-123."""
    return datetime.now(UTC).strftime("v%Y%m%d-%H%M%S-%f")[:-3]
