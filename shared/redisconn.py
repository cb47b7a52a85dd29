"""Redis connections, made one way everywhere, and the durability check `/readyz` uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis

from shared.settings import Settings

_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 5.0,
    "health_check_interval": 15,
    "retry_on_timeout": False,
}


def redacted(url: str) -> str:
    """A Redis URL fit for messages: the password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def sync_redis(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for RQ and the workers. RQ stores pickled bytes, so no response decoding."""
    return redis.Redis.from_url(settings.redis_url_or_default(), **{**_OPTIONS, **overrides})


def async_redis(settings: Settings, **overrides: Any) -> aioredis.Redis:
    """A client for the ingress (asyncio)."""
    return aioredis.Redis.from_url(settings.redis_url_or_default(), **{**_OPTIONS, **overrides})


def durability_problems(config: Mapping[Any, Any]) -> list[str]:
    """What is wrong with a server's CONFIG for a pipeline that acks after enqueue.

    `config` is the answer of CONFIG GET for appendonly, appendfsync and maxmemory-policy."""
    problems = []
    if config.get("appendonly") != "yes":
        problems.append("appendonly is not yes")
    if config.get("appendfsync") not in ("everysec", "always"):
        problems.append("appendfsync is neither everysec nor always")
    if config.get("maxmemory-policy") != "noeviction":
        problems.append("maxmemory-policy is not noeviction")
    return problems
