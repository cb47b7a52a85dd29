"""Handlers the worker tests load through B24PIPE_HANDLERS (in real worker processes).

Each records what it did in Redis under the test's namespace, so the test can check
exactly-once, retries and parking from the outside."""

from __future__ import annotations

import os
import time

from shared import lua
from shared.events import Event
from shared.redisconn import sync_redis
from shared.settings import load_settings
from workers import Permanent, RateLimited, ReauthRequired, Retry, handler

_client = sync_redis(load_settings())  # REDIS_URL as the worker reads it (Sentinel too)
_ns = os.environ["B24PIPE_NAMESPACE"]


def seen_key(ns: str, what: str) -> str:
    return f"{ns}:test:{what}"


def _record(what: str, event: Event) -> None:
    _client.rpush(seen_key(_ns, what), f"{event.id}|{event.attempt}|{os.getpid()}")


@handler("ONTESTRECORD")
def record(event: Event, b24: object) -> None:
    _record("record", event)


@handler("ONTESTSLOW")
def slow(event: Event, b24: object) -> None:
    _client.rpush(seen_key(_ns, "slow-started"), f"{event.id}|{os.getpid()}")
    time.sleep(float(event.data.get("sleep", 1)))
    _record("slow", event)


@handler("ONTESTFLAKY")
def flaky(event: Event, b24: object) -> None:
    _record("flaky", event)
    if event.attempt <= int(event.data.get("fail", 1)):
        raise RuntimeError(f"flaky attempt {event.attempt}")


@handler("ONTESTPARTIAL")
def partial_ok(event: Event, b24: object) -> None:
    _record("partial-ok", event)


@handler("ONTESTPARTIAL")
def partial_fails_once(event: Event, b24: object) -> None:
    _record("partial-flaky", event)
    if event.attempt == 1:
        raise Retry(after=0.2)


@handler("ONTESTPERM")
def permanent(event: Event, b24: object) -> None:
    _record("perm", event)
    raise Permanent("refused with access_token=abcdefabcdefabcdefabcdefabcdef0123456789 by portal")


@handler("ONTESTRATE")
def rate_limited(event: Event, b24: object) -> None:
    _record("rate", event)
    if _client.incr(seen_key(_ns, f"rate-count:{event.id}")) == 1:
        raise RateLimited(0.3)


@handler("ONTESTREAUTH")
def reauth(event: Event, b24: object) -> None:
    _record("reauth", event)
    status = _client.hget(f"{_ns}:portal:{event.member_id}", "status")
    if status != b"active":
        raise ReauthRequired("invalid_grant")


@handler("ONTESTASYNC")
async def async_record(event: Event, b24: object) -> None:
    _record("async", event)


@handler("*")
def catch_all(event: Event, b24: object) -> None:
    if event.name == "ONTESTCATCHALL":
        _record("catch-all", event)


def plain_job(key: str) -> str:
    """An ordinary RQ job (not an event): the worker runs any job function."""
    _client.rpush(key, "ran")
    return "done"


def forget_scripts(keep: str) -> str:
    """An RQ job that makes Redis forget every Lua script, as a restart does, then load
    `keep` (a script's path, '' for none) again."""
    _client.script_flush()
    if keep:
        _client.script_load(lua.source(keep))
    return "done"
