"""Shared fixtures: one real Prefect server for the session, and engines selected by name."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def prefect_api():
    """A fresh Prefect server (its own temporary database) for every flow run of the session.

    Heartbeats are off as in local CLI runs: they only tell a server that a deployed run is alive,
    and cost ~1 s at the end of every flow run.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture
def use_engine():
    """Register an engine object under a name for this test; the flow selects it with engine=NAME."""
    from storyboard_core.engines import register_engine, unregister_engine

    names = []

    def use(engine, name: str = "simulated"):
        register_engine(name, lambda: engine)
        names.append(name)
        return engine

    yield use
    for name in names:
        unregister_engine(name)
