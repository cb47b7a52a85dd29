"""The shared rate limiter: one leaky bucket per portal in Redis (see lua/ratelimit.lua).

Bitrix24 counts requests per portal and source IP in a leaky bucket (standard plans drain
2/s and hold 50, enterprise 5/s and 250). Every process that calls a portal reserves its
slot in the same Redis bucket before sending, so together they never overfill Bitrix24's.
A reservation says how long to sleep; short sleeps happen in place, longer ones raise
`RateLimited(after)` without reserving, and the worker defers the job.

The bucket we keep is a little smaller than Bitrix24's (`RatePlan.limit`): requests reserved
in order can reach the server slightly out of order or bunched by network jitter, and the
headroom absorbs that. It costs part of the burst, never part of the sustained rate.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from shared import lua
from shared.keys import Keys
from shared.rateplan import PlanError, RatePlan, parse_plan
from workers.errors import RateLimited

__all__ = ["Limiter", "PlanError", "RatePlan", "parse_plan"]


class Limiter:
    """Reservations in one portal's bucket. One instance per process and Redis client."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, scope: str = "shared") -> None:
        self._script = lua.script(redis, "workers/lua/ratelimit.lua")
        self._keys = keys
        self._scope = scope

    def key(self, member_id: str) -> str:
        return self._keys.rate_bucket(member_id, self._scope)

    async def reserve(self, member_id: str, plan: RatePlan, max_wait: float) -> float:
        """Reserve the next slot; return the seconds to sleep before sending.

        Raises `RateLimited(after)` (reserving nothing) when the wait would exceed `max_wait`."""
        answer = await self._script(
            keys=[self.key(member_id)], args=["take", plan.drain, plan.limit, max_wait]
        )
        wait = float(answer)
        if wait < 0:
            raise RateLimited(-wait)
        return wait

    async def acquire(self, member_id: str, plan: RatePlan, max_wait: float) -> float:
        """Reserve and sleep until the slot is ours; return the time waited."""
        wait = await self.reserve(member_id, plan, max_wait)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    async def saturate(self, member_id: str, plan: RatePlan) -> None:
        """Bitrix24 refused a request anyway (QUERY_LIMIT_EXCEEDED): treat the bucket as full,
        so every process spaces its next requests at the drain rate."""
        await self._script(keys=[self.key(member_id)], args=["full", plan.drain, plan.limit, 0])

    async def level(self, member_id: str, plan: RatePlan) -> float:
        return float(await self._script(keys=[self.key(member_id)], args=["peek", plan.drain, plan.limit, 0]))
