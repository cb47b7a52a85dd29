"""Handlers `make bench-writes` runs in real worker processes (B24PIPE_HANDLERS).

Each creates one deal titled after its event. The REST 3.0 one lets the client key the
write; the v2 one handles `WriteUncertain` the way the README advises for a create with no
way to look it up: it records the event as uncertain and does not write again."""

from __future__ import annotations

import os
from functools import cache

import redis

from shared.events import Event
from workers import WriteUncertain, handler
from workers.rest.client import B24


def record_key(ns: str, what: str) -> str:
    """List of the event ids that reached `what` ("done" or "uncertain")."""
    return f"{ns}:bench:writes:{what}"


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _record(what: str, event: Event) -> None:
    _client().rpush(record_key(os.environ["B24PIPE_NAMESPACE"], what), event.id)


@handler("ONBENCHCREATEV3")
def create_v3(event: Event, b24: B24) -> None:
    b24.v3("crm.deal.add", {"fields": {"TITLE": f"v3:{event.id}"}})
    _record("done", event)


@handler("ONBENCHCREATEV2")
def create_v2(event: Event, b24: B24) -> None:
    try:
        b24.call("crm.deal.add", {"fields": {"TITLE": f"v2:{event.id}"}})
    except WriteUncertain:
        _record("uncertain", event)
    _record("done", event)
