"""Handler for the fairness test: one "REST call" per event under a per-portal limit of
2 requests/s, kept in Redis (a fixed-window counter shared by every worker process), which
raises RateLimited(after) exactly as the REST client's limiter does when its bucket is empty.

The lead should switch this to the real limiter (workers.limiter) once it lands; the worker
side (deferral without an attempt, per-portal horizon) is the same either way."""

from __future__ import annotations

import os
import time

import redis

from shared.events import Event
from workers import RateLimited, handler

LIMIT_PER_SECOND = 2
CALL_SECONDS = 0.02  # the REST round trip

_client = redis.Redis.from_url(os.environ["REDIS_URL"])
_ns = os.environ["B24PIPE_NAMESPACE"]


def _rest_call(member_id: str) -> None:
    now = time.time()
    window = int(now)
    key = f"{_ns}:test:bucket:{member_id}:{window}"
    with _client.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, 5)
        used, _ = pipe.execute()
    if used > LIMIT_PER_SECOND:
        raise RateLimited(window + 1 - now + 0.01)
    time.sleep(CALL_SECONDS)


@handler("ONTESTFAIR")
def fair(event: Event, b24: object) -> None:
    _rest_call(event.member_id)
    _client.rpush(f"{_ns}:test:fair:{event.member_id}", event.id)
