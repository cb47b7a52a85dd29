"""The storm's sample handler (loaded by real workers through B24PIPE_HANDLERS): it reads each
deal and writes one field, `COMMENTS = "reviewed <TITLE>"`, only where it differs.

With `coalesce=True, batch=True` it gets the portal's waiting ONCRMDEALUPDATE events as one
list, newest event per deal, and packs its reads and writes into `batch` requests of 50.
Each run is recorded in Redis (`stormkit.RUNS`): how many events, who caused them, and the
title each deal had when it was read, so tests see what was handled and on which state."""

from __future__ import annotations

import os
import time

import orjson
import redis

from b24pipe.testing.storms import RUNS, comment_for
from shared.events import Event
from workers import handler
from workers.rest.client import B24

_client = redis.Redis.from_url(os.environ["REDIS_URL"])
_ns = os.environ["B24PIPE_NAMESPACE"]


@handler("ONCRMDEALUPDATE", coalesce=True, batch=True)
def review_deals(events: list[Event], b24: B24) -> None:
    ids = sorted({event.entity_id for event in events if event.entity_id}, key=int)
    deals = b24.call_many("crm.deal.get", [{"id": deal_id} for deal_id in ids])
    writes = [
        {"id": deal["ID"], "fields": {"COMMENTS": comment_for(deal["TITLE"])}}
        for deal in deals
        if deal.get("COMMENTS") != comment_for(deal["TITLE"])
    ]
    if writes:
        b24.call_many("crm.deal.update", writes)
    run = {
        "events": len(events),
        "users": sorted({event.user_id or 0 for event in events}),
        "sources": sorted({event.source for event in events}),
        "seen": {deal["ID"]: deal["TITLE"] for deal in deals},
        "writes": len(writes),
        "at": time.time(),
    }
    _client.rpush(f"{_ns}:{RUNS}", orjson.dumps(run))
