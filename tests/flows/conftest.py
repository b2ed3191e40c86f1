"""Flow tests run against a real Prefect API server (temporary SQLite), started once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    """Every flow test talks to the session's Prefect test server (see tests/conftest.py)."""
    yield
