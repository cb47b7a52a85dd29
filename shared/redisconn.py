"""Redis connections, made one way everywhere, and the durability check `/readyz` uses.

`REDIS_URL` names a server (`redis://`, `rediss://`, `unix://`) or Sentinel-managed Redis
(`redis+sentinel://...`, see `shared.redisurl`). A Sentinel client asks the sentinels for
the primary on every new connection, and redis-py turns a READONLY answer (the primary was
demoted) into a connection error that drops the connection: after a failover the next
command reaches the new primary without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry
from redis.sentinel import Sentinel

from shared.ackmode import plan
from shared.redisurl import SentinelTarget, parse_redis_url
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
    credentials, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return urlunsplit(parts._replace(netloc=f"{credentials.split(':', 1)[0]}:***@{hosts}"))


def sync_redis(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for RQ and the workers. RQ stores pickled bytes, so no response decoding."""
    return sync_redis_for(settings.redis_url_or_default(), **overrides)


def async_redis(settings: Settings, **overrides: Any) -> aioredis.Redis:
    """A client for the ingress (asyncio)."""
    return async_redis_for(settings.redis_url_or_default(), **overrides)


# A command run by hand waits out a short outage (a restart, a failover) instead of failing
# at once: redis-py's own retry, capped exponential backoff with jitter, about 40 s in all.
COMMAND_RETRY = Retry(ExponentialWithJitterBackoff(base=0.25, cap=5.0), retries=12)


def command_redis(settings: Settings) -> redis.Redis:
    """A client for the CLI commands (status, portals, failed)."""
    return sync_redis(
        settings, retry=COMMAND_RETRY, retry_on_error=[redis.ConnectionError, redis.TimeoutError]
    )


def sync_redis_for(url: str, **overrides: Any) -> redis.Redis:
    """A client for `url` (plain or Sentinel) with the shared options."""
    options = {**_OPTIONS, **overrides}
    target = parse_redis_url(url)
    if target is None:
        return redis.Redis.from_url(url, **options)
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=_sentinel_options(target, options), **options)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(target.master, **_primary_options(target))  # type: ignore[no-untyped-call]
    return client


def async_redis_for(url: str, **overrides: Any) -> aioredis.Redis:
    """An asyncio client for `url` (plain or Sentinel), e.g. on the workers' REST loop."""
    options = {**_OPTIONS, **overrides}
    target = parse_redis_url(url)
    if target is None:
        return aioredis.Redis.from_url(url, **options)
    sentinel = AsyncSentinel(target.sentinels, sentinel_kwargs=_sentinel_options(target, options), **options)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(target.master, **_primary_options(target))
    return client


def _sentinel_options(target: SentinelTarget, options: dict[str, Any]) -> dict[str, Any]:
    """How the sentinels themselves are asked: same timeouts and TLS, no credentials."""
    chosen: dict[str, Any] = {
        name: options[name] for name in ("socket_connect_timeout", "socket_timeout") if name in options
    }
    return {**chosen, "ssl": True} if target.tls else chosen


def _primary_options(target: SentinelTarget) -> dict[str, Any]:
    chosen: dict[str, Any] = {"db": target.db, "username": target.username, "password": target.password}
    return {**chosen, "ssl": True} if target.tls else chosen


def server_config(answers: list[Mapping[Any, Any]]) -> dict[str, str]:
    """CONFIG GET answers for the durability settings, as one dict of str."""
    return {_text(k or ""): _text(v or "") for answer in answers for k, v in answer.items()}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


DURABILITY_SETTINGS = ("appendonly", "appendfsync", "maxmemory-policy")


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


@dataclass(frozen=True)
class ServerFacts:
    """What one Redis server says about keeping writes: its durability settings (None where
    CONFIG is refused, as managed services do) and whether it has WAITAOF."""

    config: dict[str, str] | None
    has_waitaof: bool


async def server_facts(client: aioredis.Redis) -> ServerFacts:
    """Ask the server (connection errors propagate: the server is not there)."""
    try:
        config: dict[str, str] | None = server_config(
            [await client.config_get(name) for name in DURABILITY_SETTINGS]
        )
    except ResponseError:  # NOPERM, or CONFIG renamed/disabled
        config = None
    try:  # WAITAOF 0 0: returns at once, it waits for nothing
        await client.execute_command("WAITAOF", 0, 0, 1)  # type: ignore[no-untyped-call]
        has_waitaof = True
    except ResponseError:  # unknown command before Redis 7.2
        has_waitaof = False
    return ServerFacts(config, has_waitaof)


@dataclass(frozen=True)
class Readiness:
    """`/readyz`'s verdict: problems (any: 503) and what it knows about durability
    (`verified`, or `unknown` where CONFIG is refused)."""

    problems: list[str]
    durability: str


def readiness(facts: ServerFacts, mode: str, strict: bool) -> Readiness:
    """Pure: the verdict for a server's facts, the ack mode in force and
    `B24PIPE_DURABILITY_STRICT`."""
    problem = plan(mode, facts.config, facts.has_waitaof).problem
    extra = [problem] if problem else []
    if facts.config is None:
        if strict:
            extra.append("CONFIG is refused: durability cannot be verified (B24PIPE_DURABILITY_STRICT)")
        return Readiness(extra, "unknown")
    return Readiness(durability_problems(facts.config) + extra, "verified")
