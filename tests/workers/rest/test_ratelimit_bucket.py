"""The limiter's bucket (workers/lua/ratelimit.lua) by its behaviour: exact limits, the level
and its bounds, the key's lifetime, one bucket per portal, and the plans it accepts.

Lua has no mutation tool: these tests pin what the script does so that a changed script
(a wrong sign, a bucket that drains slower, a limit off by one) fails them. Found by
`make mutate` (workers/rest/ratelimit.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from shared.keys import Keys
from workers.errors import RateLimited
from workers.rest.ratelimit import Limiter, PlanError, RatePlan, parse_plan


def run(redis_url: str, ns: str, scenario: Callable[[Limiter], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await scenario(Limiter(client, Keys(ns), scope="namespace"))
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("text", ["custom:0/10", "custom:0.0/10", "custom:5/0"])
def test_plans_that_would_divide_by_zero_are_refused(text: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(text)
    assert str(caught.value) == f"rate plan {text!r} needs a positive drain and burst"


def test_a_worker_refuses_a_zero_plan_at_start(base_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **base_env, "B24PIPE_RATE_PLAN": "custom:0/10"}
    done = subprocess.run(
        [sys.executable, "-m", "b24pipe", "worker", "--burst"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "b24pipe: invalid setting B24PIPE_RATE_PLAN: rate plan 'custom:0/10' needs a positive drain and burst"
    ]


def test_the_smallest_plan_is_accepted_and_keeps_one_slot() -> None:
    assert parse_plan("custom:1/1") == RatePlan(1.0, 1)
    assert RatePlan(1.0, 1).limit == 1
    assert RatePlan(2.0, 50).limit == 48 and RatePlan(5.0, 250).limit == 240 and RatePlan(1.0, 4).limit == 3


def test_the_default_scope_is_the_bucket_every_app_shares() -> None:
    limiter = Limiter(aioredis.Redis(), Keys("app1"))
    assert limiter.key("m1") == "b24:rate:m1" == Keys("app2").rate_bucket("m1", "shared")


def test_exact_limit_then_one_slot_per_drain_interval(redis_url: str, ns: str, r: redis.Redis) -> None:
    plan = RatePlan(drain=0.5, burst=4)  # limit 3; a slot every 2 s

    async def scenario(limiter: Limiter) -> None:
        assert [await limiter.reserve("p", plan, max_wait=0) for _ in range(plan.limit)] == [0.0] * 3
        next_wait = await limiter.reserve("p", plan, max_wait=60)
        assert 1.9 < next_wait <= 2.0  # one slot: 1/drain, less what drained meanwhile
        after_that = await limiter.reserve("p", plan, max_wait=60)
        assert 3.9 < after_that <= 4.0
        level = await limiter.level("p", plan)
        assert 4.9 < level <= 5.0  # the reservations waiting count in the level
        assert await limiter.level("p", plan) <= level  # peeking reserves nothing
        assert await limiter.reserve("other", plan, max_wait=0) == 0.0  # one bucket per portal

    run(redis_url, ns, scenario)


def test_the_level_drains_at_the_plan_rate_and_never_below_zero(
    redis_url: str, ns: str, r: redis.Redis
) -> None:
    plan = RatePlan(drain=10.0, burst=20)

    async def scenario(limiter: Limiter) -> None:
        key = limiter.key("p")
        now = time.time()
        r.hset(key, mapping={"level": "15", "ts": str(now - 1.0)})  # one second ago: 10 drained
        level = await limiter.level("p", plan)
        assert 3.5 < level <= 5.0, level
        r.hset(key, mapping={"level": "15", "ts": str(now - 100.0)})
        assert await limiter.level("p", plan) == 0.0

    run(redis_url, ns, scenario)


def test_the_bucket_key_expires_once_drained(redis_url: str, ns: str, r: redis.Redis) -> None:
    plan = RatePlan(drain=0.5, burst=10)

    async def scenario(limiter: Limiter) -> None:
        for _ in range(3):
            await limiter.reserve("p", plan, max_wait=0)
        ttl = r.pttl(limiter.key("p"))
        assert 60_000 < ttl <= (3 / 0.5 + 60) * 1000  # drained (6 s) plus a minute

    run(redis_url, ns, scenario)


def test_saturate_fills_to_the_limit_and_never_lowers_the_level(
    redis_url: str, ns: str, r: redis.Redis
) -> None:
    plan = RatePlan(drain=0.1, burst=10)  # limit 9

    async def scenario(limiter: Limiter) -> None:
        await limiter.reserve("p", plan, max_wait=0)
        await limiter.saturate("p", plan)
        assert plan.limit - 0.1 < await limiter.level("p", plan) <= plan.limit
        for _ in range(3):
            await limiter.reserve("p", plan, max_wait=100)
        before = await limiter.level("p", plan)
        await limiter.saturate("p", plan)
        assert await limiter.level("p", plan) >= before - 0.1
        with pytest.raises(RateLimited) as caught:
            await limiter.reserve("p", plan, max_wait=1)
        assert caught.value.after > 1

    run(redis_url, ns, scenario)


def test_acquire_sleeps_out_the_reserved_wait(redis_url: str, ns: str, r: redis.Redis) -> None:
    plan = RatePlan(drain=4.0, burst=2)  # limit 1; the second slot is 0.25 s away

    async def scenario(limiter: Limiter) -> None:
        loop = asyncio.get_running_loop()
        assert await limiter.acquire("p", plan, max_wait=5) == 0.0
        started = loop.time()
        waited = await limiter.acquire("p", plan, max_wait=5)
        assert 0.2 < waited <= 0.25
        assert loop.time() - started >= waited * 0.99  # it returned only once the slot was due
        assert await limiter.level("p", plan) > 0.5  # the slots were taken in the portal's own bucket

    run(redis_url, ns, scenario)
