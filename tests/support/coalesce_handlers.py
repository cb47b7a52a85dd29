"""Coalescing and batch handlers the coalescing worker tests load through B24PIPE_HANDLERS
(in real worker processes). Each records its runs in Redis under the test's namespace."""

from __future__ import annotations

import os
import time

import redis

from shared.events import Event
from workers import handler

_client = redis.Redis.from_url(os.environ["REDIS_URL"])
_ns = os.environ["B24PIPE_NAMESPACE"]


@handler("ONCRMLEADUPDATE", coalesce=True, delay=1.0)
@handler("ONCRMLEADADD", coalesce=True, delay=1.0)
def coalesced(event: Event, b24: object) -> None:
    """Sleeps (once per event) when the event asks, so a test can kill the worker mid-run."""
    if event.data.get("sleep") and _client.set(f"{_ns}:test:slept:{event.id}", 1, nx=True):
        _client.rpush(f"{_ns}:test:coalesced-started", event.id)
        time.sleep(float(event.data["sleep"]))
    _client.rpush(f"{_ns}:test:coalesced", f"{event.id}|{event.attempt}|{os.getpid()}")


@handler("ONCRMCONTACTUPDATE", batch=True, coalesce=True, delay=1.0)
def batched(events: list[Event], b24: object) -> None:
    _client.rpush(f"{_ns}:test:batched", ",".join(event.id for event in events))
