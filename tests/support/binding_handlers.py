"""Handlers of the binding end-to-end test (loaded by real worker processes through
B24PIPE_HANDLERS): a deal update handler that writes back to the deal, so its own write's
echo comes back through Bitrix24 and must not be dispatched."""

from __future__ import annotations

import os

import orjson
import redis

from shared.events import Event
from workers import handler
from workers.rest.client import B24

_client = redis.Redis.from_url(os.environ["REDIS_URL"])
_ns = os.environ["B24PIPE_NAMESPACE"]


@handler("ONCRMDEALUPDATE")
def stamp_deal(event: Event, b24: B24) -> None:
    _client.rpush(f"{_ns}:test:deal-updates", orjson.dumps({"id": event.id, "user_id": event.user_id}))
    b24.call("crm.deal.update", {"id": event.entity_id, "fields": {"COMMENTS": f"seen {event.id}"}})
