"""Handler for the fairness test: one "REST call" per event, paced by the real shared limiter
(`workers.rest.ratelimit`, the leaky bucket every worker process reserves in) at 2 requests/s per
portal. A wait longer than an instant raises `RateLimited(after)`, as the REST client does
past `B24PIPE_MAX_INPLACE_WAIT`, so the worker defers the job instead of holding a slot.

Only the HTTP round trip is a stand-in (a short sleep): fairness is about what the worker
does with a portal stuck behind its limit, not about the simulator."""

from __future__ import annotations

import asyncio
import os

import redis
import redis.asyncio as aioredis

from shared.events import Event
from shared.keys import Keys
from workers import handler
from workers.rest.ratelimit import Limiter, RatePlan

PLAN = RatePlan(drain=2.0, burst=3)
MAX_WAIT = 0.05  # anything longer is deferred: the test is about deferral, not in-place waits
CALL_SECONDS = 0.02  # the REST round trip

_keys = Keys(os.environ["B24PIPE_NAMESPACE"])
_results = redis.Redis.from_url(os.environ["REDIS_URL"])
# Async handlers always run on the worker's one client loop, so one async client serves them all;
# the bucket is scoped to the test's namespace so parallel runs never share it.
_limiter = Limiter(aioredis.Redis.from_url(os.environ["REDIS_URL"]), _keys, scope="namespace")


@handler("ONTESTFAIR")
async def fair(event: Event, b24: object) -> None:
    await _limiter.acquire(event.member_id, PLAN, MAX_WAIT)
    await asyncio.sleep(CALL_SECONDS)
    _results.rpush(f"{_keys.ns}:test:fair:{event.member_id}", event.id)
