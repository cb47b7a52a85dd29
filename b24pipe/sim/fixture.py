"""pytest plugin: a session-wide simulator process and its `SimClient`.

Register with `pytest_plugins = ["b24pipe.sim.fixture"]` (tests/conftest.py does). The
process starts once on a free port; tests isolate themselves by creating their own portals
(`simulator.create_portal()` picks a unique member id and domain), never by resetting it.
Credentials match the suite's `base_env` (B24_CLIENT_ID / B24_CLIENT_SECRET).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from b24pipe.sim.client import SimClient
from shared.redisserver import free_port

CLIENT_ID = "app.test.client"
CLIENT_SECRET = "test-client-secret-value"
ROOT = Path(__file__).resolve().parents[2]


def wait_until_up(url: str, process: subprocess.Popen[bytes], deadline: float = 20.0) -> None:
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if process.poll() is not None:
            raise RuntimeError(f"simulator exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_sim/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("simulator did not answer in time")


def start_simulator(log_path: Path, token_ttl: int = 3600) -> tuple[subprocess.Popen[bytes], SimClient]:
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "b24pipe.sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            "--token-ttl",
            str(token_ttl),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    client = SimClient(f"http://127.0.0.1:{port}", CLIENT_ID, CLIENT_SECRET)
    try:
        wait_until_up(client.base_url, process)
    except Exception:
        stop(process)
        raise
    return process, client


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    process, client = start_simulator(tmp_path_factory.mktemp("simulator") / "simulator.log")
    try:
        yield client
    finally:
        stop(process)
