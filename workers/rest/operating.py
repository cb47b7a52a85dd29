"""The per-method operating-time window: stop calling a method before Bitrix24 blocks it.

Bitrix24 adds up the server time each method of an app used in the last 10 minutes and
answers 429 OPERATION_TIME_LIMIT above a limit (480 s in the docs) until the window frees
up. Every answer reports the running total (`time.operating`) and when part of it is
released (`time.operating_reset_at`). We store the latest report per portal and method in
Redis, so every process sees it, and pause the method once it reaches
`B24PIPE_OPERATING_PAUSE_AT` until its reset time. Other methods are unaffected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.keys import Keys

_KEEP = 700  # seconds: the window is 10 minutes, a report older than that says nothing


@dataclass(frozen=True)
class Report:
    operating: float
    reset_at: float


def report_from(time_block: Any, now: float) -> Report | None:
    """The operating figures of a `time` block, or None when it carries none.

    `operating_reset_at` is on the server's clock; it is moved to ours as an offset from the
    block's own `start` (else `finish`), so a skewed server clock does not move the pause. The
    start is the earliest server time the answer names: measured from it the pause can only
    come out longer by the request's duration, never end before the window has freed up."""
    if not isinstance(time_block, dict):
        return None
    try:
        operating = float(time_block.get("operating") or 0)
        reset_at = float(time_block.get("operating_reset_at") or 0)
        server_time = float(time_block.get("start") or time_block.get("finish") or 0)
    except (TypeError, ValueError):
        return None
    if operating <= 0 and reset_at <= 0:
        return None
    if server_time > 0 and reset_at > 0:
        reset_at = now + (reset_at - server_time)
    return Report(operating, reset_at)


def pause_for(report: Report | None, now: float, pause_at: float) -> float:
    """Seconds to hold off a method (0 = call it now)."""
    if report is None or report.operating < pause_at or report.reset_at <= now:
        return 0.0
    return report.reset_at - now


class OperatingWindow:
    def __init__(self, redis: aioredis.Redis, keys: Keys, pause_at: float) -> None:
        self._redis = redis
        self._keys = keys
        self.pause_at = pause_at

    async def pause(self, member_id: str, method: str) -> float:
        raw = await self._redis.hmget(self._keys.operating(member_id, method), ["operating", "reset_at"])
        if raw[0] is None:
            return 0.0
        return pause_for(Report(float(raw[0]), float(raw[1] or 0)), time.time(), self.pause_at)

    async def record(self, member_id: str, method: str, report: Report) -> None:
        key = self._keys.operating(member_id, method)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"operating": report.operating, "reset_at": report.reset_at})
            pipe.expire(key, _KEEP)
            await pipe.execute()

    async def blocked(self, member_id: str, method: str, reset_at: float) -> None:
        """A 429 arrived anyway: hold the method until `reset_at`."""
        await self.record(member_id, method, Report(self.pause_at, reset_at))
