"""Handlers the REST-client tests load through B24PIPE_HANDLERS (in real worker processes).

Each records what its calls returned in Redis under the test's namespace, so a test sees
from the outside which events reached a handler and what the handler got."""

from __future__ import annotations

import os

import orjson
import redis

from shared.events import Event
from tests.support.clientkit import done_key
from workers import handler
from workers.rest.client import B24

_client = redis.Redis.from_url(os.environ["REDIS_URL"])
_ns = os.environ["B24PIPE_NAMESPACE"]


def _record(what: str, event: Event, value: object) -> None:
    _client.rpush(done_key(_ns, what), orjson.dumps({"event": event.id, "value": value}))


@handler("ONTESTPROFILE")
def profile(event: Event, b24: B24) -> None:
    _record("profile", event, b24.call("profile")["ID"])


@handler("ONTESTMETHOD")
def call_method(event: Event, b24: B24) -> None:
    """Calls `data.method` `data.times` times (an operating-time window test)."""
    method = str(event.data.get("method", "profile"))
    for _ in range(int(event.data.get("times", 1))):
        b24.call(method)
    _record("method", event, method)
