"""pytest plugin for apps built on b24pipe (entry point `pytest11`, name `b24pipe`: active in
any project whose environment has b24pipe installed; nothing to register).

Fixtures:
- `simulator` (session): a running Bitrix24 simulator, as a `SimClient`.
- `b24_pipeline` (module): the real ingress and one worker process running the app's handlers
  against that simulator, on a Redis of their own namespace; `.env`, `.url`, `.logs()`.
- `b24_portal` (each test): a new simulated portal with the app installed through the real
  install flow and its events bound; `AppPortal` (b24pipe.simportal): `add`, `edit`, `storm`,
  `get`, `wait_handled`, `wait_until`.

The handlers are the modules named by the marker `@pytest.mark.b24pipe(handlers=[...])` (on
the module: `pytestmark = ...`), else the `b24pipe_handlers` ini option, else
`B24PIPE_HANDLERS`. Redis: `REDIS_URL` when set, else a server started for the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from b24pipe.commands.run import stop_process
from b24pipe.redisserver import LocalServer, free_port, start_server
from b24pipe.sim.client import SimClient
from b24pipe.simportal import AppPortal, SimulatorError, install_app, pipeline_env, wait_answering
from shared.crypto import generate_key
from shared.keys import Keys

# `simulator` comes from here; a conftest that lists it as well is not registering it twice
pytest_plugins = ["b24pipe.sim.fixture"]

MARKER = "b24pipe"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("b24pipe_handlers", "modules with the app's handlers (like B24PIPE_HANDLERS)", type="args")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(handlers=[...], env={{}}): handler modules and settings of b24_pipeline"
    )


@dataclass
class Pipeline:
    """The ingress and a worker running the app's handlers (see the module docstring)."""

    env: dict[str, str]
    url: str
    keys: Keys
    redis: redis.Redis
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def logs(self) -> str:
        """Everything the ingress and the worker logged so far (JSON lines)."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log")))


def _handlers(request: pytest.FixtureRequest) -> list[str]:
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None and marker.kwargs.get("handlers"):
        return list(marker.kwargs["handlers"])
    configured: list[str] = request.config.getini("b24pipe_handlers")
    if configured:
        return configured
    return [m.strip() for m in os.environ.get("B24PIPE_HANDLERS", "").split(",") if m.strip()]


def _wait_logged(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            lines = path.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            pytest.fail(f"b24_pipeline: {path.stem} exited with {process.returncode}: {lines[-1]}")
        time.sleep(0.05)
    pytest.fail(f"b24_pipeline: {path.stem} did not log {text!r} within {timeout} s")


@pytest.fixture(scope="session")
def b24_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    server: LocalServer = start_server(tmp_path_factory.mktemp("b24-redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def b24_pipeline(
    request: pytest.FixtureRequest,
    simulator: SimClient,
    b24_redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    handlers = _handlers(request)
    if not handlers:
        pytest.fail(
            "b24_pipeline: no handlers (mark b24pipe(handlers=[...]), b24pipe_handlers or B24PIPE_HANDLERS)"
        )
    marker = request.node.get_closest_marker(MARKER)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    namespace = f"t{uuid.uuid4().hex[:12]}"
    search = [
        str(request.config.rootpath),
        os.getcwd(),
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    env = {
        **os.environ,
        "REDIS_URL": b24_redis_url,
        "B24PIPE_NAMESPACE": namespace,
        "B24PIPE_TOKEN_KEYS": generate_key(),
        "B24PIPE_HANDLERS": ",".join(handlers),
        "B24PIPE_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(search),
        **pipeline_env(simulator, url),
        **(marker.kwargs.get("env", {}) if marker is not None else {}),
    }
    log_dir = tmp_path_factory.mktemp("b24-pipeline")
    connection = redis.Redis.from_url(b24_redis_url)
    pipeline = Pipeline(env, url, Keys(namespace), connection, log_dir)
    try:
        for name, argv in (
            ("ingress", ["ingress", "--host", "127.0.0.1", "--port", str(port)]),
            ("worker", ["worker"]),
        ):
            with (log_dir / f"{name}.log").open("wb") as log:
                pipeline.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "b24pipe", *argv],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        ingress, worker = pipeline.processes
        try:
            wait_answering(f"{url}/healthz", ingress, "the ingress")
        except SimulatorError as exc:
            pytest.fail(f"b24_pipeline: {exc}: {pipeline.logs()[-2000:]}")
        _wait_logged(log_dir / "worker.log", "worker started", worker)
        yield pipeline
    finally:
        for process in pipeline.processes:
            stop_process(process)
        connection.close()


@pytest.fixture
def b24_portal(b24_pipeline: Pipeline, simulator: SimClient) -> AppPortal:
    return install_app(simulator, b24_pipeline.env, b24_pipeline.redis, b24_pipeline.keys)
