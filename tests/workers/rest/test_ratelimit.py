"""The shared limiter against a real Redis, from several real processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from shared.keys import Keys
from tests.support.propcoverage import branch, reaches
from workers.errors import RateLimited
from workers.rest.ratelimit import Limiter, PlanError, RatePlan, parse_plan


def test_named_and_custom_plans() -> None:
    assert parse_plan("standard") == RatePlan(2.0, 50)
    assert parse_plan("Enterprise") == RatePlan(5.0, 250)
    assert parse_plan("custom:20/100") == RatePlan(20.0, 100)
    assert parse_plan("custom:0.5/10") == RatePlan(0.5, 10)
    assert RatePlan(2.0, 50).limit < 50


_plans = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\A *(custom:[0-9]{1,3}(\.[0-9]{1,2})?/[0-9]{1,3}|standard|Enterprise) *\Z"),
)


@reaches(accepted=0.1, refused=0.1)
@given(_plans)
def test_bad_plans_are_refused_by_name(text: str) -> None:
    try:
        plan = parse_plan(text)
    except PlanError as exc:
        assert "rate plan" in str(exc)
        branch("refused")
    else:
        assert plan.drain > 0 and plan.burst >= 1 and 1 <= plan.limit <= plan.burst
        branch("accepted")


def _sends(redis_url: str, ns: str, drain: float, burst: int, count: int) -> list[float]:
    """One process's `count` acquisitions, the times they were let through."""

    async def main() -> list[float]:
        client = aioredis.Redis.from_url(redis_url)
        limiter = Limiter(client, Keys(ns), scope="namespace")
        sent = []
        for _ in range(count):
            await limiter.acquire("portal-1", RatePlan(drain, burst), max_wait=60)
            sent.append(time.time())
        await client.aclose()
        return sent

    return asyncio.run(main())


if __name__ == "__main__":  # a sender process of the test below
    url, namespace, rate, size, many = sys.argv[1:]
    sys.stdout.write(orjson.dumps(_sends(url, namespace, float(rate), int(size), int(many))).decode())


def _max_level(times: list[float], drain: float) -> float:
    """The level Bitrix24's bucket would reach for requests arriving at `times`."""
    level, last, peak = 0.0, None, 0.0
    for at in sorted(times):
        if last is not None:
            level = max(0.0, level - (at - last) * drain)
        level += 1
        last = at
        peak = max(peak, level)
    return peak


def test_eight_processes_never_overfill_the_bucket(redis_url: str, ns: str, r: redis.Redis) -> None:
    plan = RatePlan(drain=40.0, burst=20)
    # plain subprocesses, all waited for before any assertion: none outlives the test (mutmut
    # runs it in its own process and takes any child it finds for one of its workers)
    args = [redis_url, ns, str(plan.drain), str(plan.burst), "15"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.workers.rest.test_ratelimit", *args],
            cwd=Path(__file__).resolve().parents[3],
            stdout=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    outs = [proc.communicate(timeout=90)[0] for proc in procs]  # every one waited, even on failure
    assert [proc.returncode for proc in procs] == [0] * 8
    times = [at for out in outs for at in orjson.loads(out)]
    assert len(times) == 120
    assert _max_level(times, plan.drain) <= plan.burst
    # The first `limit` requests went at once (the burst); the rest were spread at the drain rate.
    times.sort()
    steady = times[plan.limit :]
    achieved = (len(steady) - 1) / (steady[-1] - steady[0])
    # Never faster than the drain is the level check above; not far slower is this one (a
    # bucket draining at a fraction of its rate fails it; a loaded machine does not).
    assert achieved >= plan.drain / 4, f"achieved {achieved:.1f}/s of {plan.drain}/s"


def test_long_waits_raise_without_reserving(redis_url: str, ns: str, r: redis.Redis) -> None:
    asyncio.run(_long_waits(redis_url, ns))


async def _long_waits(redis_url: str, ns: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    limiter = Limiter(client, Keys(ns), scope="namespace")
    plan = RatePlan(drain=1.0, burst=4)
    waits = [await limiter.reserve("p", plan, max_wait=0.5) for _ in range(plan.limit)]
    assert waits == [0.0] * plan.limit
    with pytest.raises(RateLimited) as caught:
        await limiter.reserve("p", plan, max_wait=0.5)
    assert 0.5 < caught.value.after <= 1.0
    level = await limiter.level("p", plan)
    assert level <= plan.limit  # the refused call reserved nothing
    # Waiting in place is allowed up to max_wait: the next reservation takes the next slot.
    wait = await limiter.reserve("p", plan, max_wait=5)
    assert 0 < wait <= 1.0
    await client.aclose()


def test_saturate_makes_everyone_wait(redis_url: str, ns: str, r: redis.Redis) -> None:
    asyncio.run(_saturate(redis_url, ns))


async def _saturate(redis_url: str, ns: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    limiter = Limiter(client, Keys(ns), scope="namespace")
    plan = RatePlan(drain=2.0, burst=50)
    assert await limiter.reserve("p", plan, max_wait=0) == 0
    await limiter.saturate("p", plan)
    with pytest.raises(RateLimited):
        await limiter.reserve("p", plan, max_wait=0.1)
    await client.aclose()


def test_shared_scope_is_one_bucket_across_namespaces() -> None:
    assert Keys("app1").rate_bucket("m", "shared") == Keys("app2").rate_bucket("m", "shared")
    assert Keys("app1").rate_bucket("m", "namespace") != Keys("app2").rate_bucket("m", "namespace")
