"""The ingress's token cache against a real Redis: a cached portal is answered without a
read, a version bump (how a revocation is published) drops it, one read serves every waiter,
the size bound holds, and the poller keeps polling whatever happens.

Found by `make mutate` (ingress/tokencheck.py): the cache could be never used or never
invalidated and no test of its own noticed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
import redis
import redis.asyncio as aioredis

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import seed_portal
from ingress import tokencheck
from ingress.tokencheck import ACCEPTED, Decision, PortalTokens, Reason, TokenCache, Verdict, portal_tokens
from shared.crypto import digest
from shared.keys import Keys
from shared.portals import AcceptedToken, Status
from tests.conftest import PrivateRedis
from tests.support.secretscan import RawLog

MISMATCH = Decision(Verdict.REJECT, Reason.MISMATCH)


def run(
    redis_url: str, keys: Keys, scenario: Callable[[TokenCache], Awaitable[None]], poll: float = 0.25
) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        cache = TokenCache(client, keys, poll_interval=poll)
        try:
            await scenario(cache)
        finally:
            await cache.stop()
            await client.aclose()

    asyncio.run(main())


def replace_token(r: redis.Redis, keys: Keys, member_id: str, old: str, new: str) -> None:
    """What a token change writes, without the version bump that publishes it."""
    r.hdel(keys.app_tokens(member_id), digest(old))
    r.hset(keys.app_tokens(member_id), digest(new), AcceptedToken("app").encode())


def test_a_cached_portal_is_answered_without_a_read_until_the_version_changes(
    r: redis.Redis, redis_url: str, keys: Keys
) -> None:
    seed_portal(r, keys, "m1", "t1")

    async def scenario(cache: TokenCache) -> None:
        await cache.poll_once()
        assert cache.cached("m1", "t1") is None  # not read yet
        assert await cache.check("m1", "t1") == ACCEPTED
        replace_token(r, keys, "m1", "t1", "t2")
        assert cache.cached("m1", "t1") == ACCEPTED  # the cache answers, Redis is not read
        assert await cache.check("m1", "t2") == MISMATCH
        await cache.poll_once()  # same version: the cache stays
        assert await cache.check("m1", "t1") == ACCEPTED
        r.incr(keys.portals_version)
        await cache.poll_once()
        assert cache.cached("m1", "t1") is None  # dropped
        assert await cache.check("m1", "t2") == ACCEPTED
        assert await cache.check("m1", "t1") == MISMATCH

    run(redis_url, keys, scenario)


def test_a_revocation_is_read_after_the_bump(r: redis.Redis, redis_url: str, keys: Keys) -> None:
    seed_portal(r, keys, "m1", "t1")

    async def scenario(cache: TokenCache) -> None:
        await cache.poll_once()
        assert await cache.check("m1", "t1") == ACCEPTED
        r.hset(keys.portal("m1"), "status", str(Status.REVOKED))
        r.incr(keys.portals_version)
        await cache.poll_once()
        assert await cache.check("m1", "t1") == Decision(Verdict.REJECT, Reason.REVOKED)

    run(redis_url, keys, scenario)


def test_the_poller_drops_the_cache_on_a_bump_and_stop_ends_it(
    r: redis.Redis, redis_url: str, keys: Keys
) -> None:
    seed_portal(r, keys, "m1", "t1")

    async def scenario(cache: TokenCache) -> None:
        before = len(asyncio.all_tasks())
        await cache.start()
        assert len(asyncio.all_tasks()) == before + 1  # the poller
        assert await cache.check("m1", "t1") == ACCEPTED
        r.incr(keys.portals_version)
        for _ in range(200):  # bounded: the poller runs every 50 ms
            if cache.cached("m1", "t1") is None:
                break
            await asyncio.sleep(0.05)
        assert cache.cached("m1", "t1") is None, "the poller never dropped the cache"
        await cache.stop()
        assert len(asyncio.all_tasks()) == before

    run(redis_url, keys, scenario, poll=0.05)


def test_stop_without_start_is_harmless(redis_url: str, keys: Keys) -> None:
    async def scenario(cache: TokenCache) -> None:
        await cache.stop()

    run(redis_url, keys, scenario)


def test_a_poll_that_fails_is_logged_drops_the_cache_and_polling_goes_on(
    r: redis.Redis, redis_url: str, keys: Keys, raw_log: RawLog
) -> None:
    seed_portal(r, keys, "m1", "t1")

    async def scenario(cache: TokenCache) -> None:
        real = cache.poll_once
        state = {"polls": 0, "fail_at": 0}

        async def flaky() -> None:
            state["polls"] += 1
            if state["polls"] == state["fail_at"]:
                raise RuntimeError("boom")
            await real()

        cache.poll_once = flaky  # type: ignore[method-assign]
        await cache.start()
        assert await cache.check("m1", "t1") == ACCEPTED
        state["fail_at"] = state["polls"] + 1  # the next poll fails
        for _ in range(400):
            if state["polls"] >= state["fail_at"] + 2:
                break
            await asyncio.sleep(0.02)
        assert state["polls"] >= state["fail_at"] + 2, "polling stopped after a failure"
        assert cache.cached("m1", "t1") is None  # the failure dropped the cache

    run(redis_url, keys, scenario, poll=0.02)
    failed = [rec for rec in raw_log.records if rec.getMessage() == "token cache poll failed"]
    assert failed and failed[0].levelno == logging.WARNING
    assert failed[0].fields == {"error": "RuntimeError"}  # type: ignore[attr-defined]


def test_an_unreachable_redis_drops_the_cache(r: redis.Redis, redis_url: str, keys: Keys) -> None:
    seed_portal(r, keys, "m1", "t1")

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        cache = TokenCache(client, keys)
        await cache.poll_once()
        assert await cache.check("m1", "t1") == ACCEPTED
        cache._client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=2)
        await cache.poll_once()  # stale is unsafe: nothing stays cached
        assert cache.cached("m1", "t1") is None
        await cache._client.aclose()
        await client.aclose()

    asyncio.run(main())


def test_one_read_serves_every_waiter_and_a_later_load_reads_again(
    private_redis: PrivateRedis, keys: Keys
) -> None:
    sync = private_redis.client()
    seed_portal(sync, keys, "m1", "t1")

    def reads() -> int:
        stats = sync.info("commandstats").get("cmdstat_hgetall", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    async def main() -> None:
        client = aioredis.Redis(host="127.0.0.1", port=private_redis.port)
        cache = TokenCache(client, keys)
        await cache.poll_once()
        sync.config_resetstat()
        decisions = await asyncio.gather(*(cache.check("m1", "t1") for _ in range(5)))
        assert decisions == [ACCEPTED] * 5 and reads() == 1
        replace_token(sync, keys, "m1", "t1", "t2")
        sync.incr(keys.portals_version)
        await cache.poll_once()
        assert await cache.check("m1", "t2") == ACCEPTED  # a fresh read, not the finished one
        assert reads() == 2
        await client.aclose()

    asyncio.run(main())


def test_the_cache_size_bound(
    r: redis.Redis, redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokencheck, "MAX_CACHED", 2)
    for member in ("m1", "m2", "m3"):
        seed_portal(r, keys, member, "t")

    async def scenario(cache: TokenCache) -> None:
        await cache.poll_once()
        for member in ("m1", "m2"):
            await cache.check(member, "t")
        assert cache.cached("m1", "t") == ACCEPTED and cache.cached("m2", "t") == ACCEPTED
        await cache.check("m3", "t")  # the bound is reached: the cache starts over
        assert cache.cached("m1", "t") is None and cache.cached("m3", "t") == ACCEPTED

    run(redis_url, keys, scenario)


def test_a_grace_token_read_from_redis_is_judged_by_the_clock(
    r: redis.Redis, redis_url: str, keys: Keys
) -> None:
    seed_portal(r, keys, "m1", "t1")
    r.hset(keys.app_tokens("m1"), digest("old"), AcceptedToken("grace", 1).encode())  # long expired

    async def scenario(cache: TokenCache) -> None:
        assert await cache.check("m1", "old") == Decision(Verdict.REJECT, Reason.EXPIRED)
        assert cache.cached("m1", "old") == Decision(Verdict.REJECT, Reason.EXPIRED)  # judged again, now

    run(redis_url, keys, scenario)


def test_cached_refuses_a_missing_token_at_once() -> None:
    cache = TokenCache(aioredis.Redis(), Keys("unused"))
    assert cache.cached("m1", "") == Decision(Verdict.REJECT, Reason.MISSING)
    assert cache.cached("m1", None) == Decision(Verdict.REJECT, Reason.MISSING)


def test_portal_tokens_skips_every_unreadable_entry() -> None:
    view = portal_tokens(
        None,
        {b"d1": AcceptedToken("app").encode(), b"d2": b'{"expires_at": null}', b"d3": b'{"expires_at": "x"}'},
    )
    assert view == PortalTokens("", {"d1": AcceptedToken("app")})
    assert not portal_tokens(None, {}).known
