"""pytest plugin: a session-wide simulator process and its `SimClient`.

b24pipe's pytest plugin (b24pipe.pytest_plugin, entry point `pytest11`) loads it; listing it
in `pytest_plugins` as well (tests/conftest.py does) registers it once. The
process starts once on a free port; tests isolate themselves by creating their own portals
(`simulator.create_portal()` picks a unique member id and domain), never by resetting it.
Credentials match the suite's `base_env` (B24_CLIENT_ID / B24_CLIENT_SECRET).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.simportal import launch_simulator, stop_simulator

CLIENT_ID = "app.test.client"
CLIENT_SECRET = "test-client-secret-value"
ROOT = Path(__file__).resolve().parents[2]


def start_simulator(log_path: Path, token_ttl: int = 3600) -> tuple[subprocess.Popen[bytes], SimClient]:
    with log_path.open("wb") as log:
        return launch_simulator(free_port(), CLIENT_ID, CLIENT_SECRET, log, token_ttl, cwd=ROOT)


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_simulator(process)


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    process, client = start_simulator(tmp_path_factory.mktemp("simulator") / "simulator.log")
    try:
        yield client
    finally:
        stop(process)
