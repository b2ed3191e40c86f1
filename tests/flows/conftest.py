"""Flow tests run against a real Prefect API server (temporary SQLite), started once per session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def prefect_server(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = "ragtune"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
