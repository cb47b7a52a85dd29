"""A real `b24pipe ingress` process against a Redis of the test's own that fails under it.

The contract: an event is answered 200 only once its job is stored; when Redis is down,
stalled or refuses writes the answer is 503 (within the enqueue timeout, bounded here
generously), the process holds at most `B24PIPE_MAX_INFLIGHT` requests, and it recovers
by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson
import redis

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import (
    body,
    event_id,
    ingress_process,
    metrics_text,
    post_event,
    queued,
    seed_pending,
    seed_portal,
    stored_event_ids,
)
from shared.crypto import digest
from shared.keys import Keys
from tests.conftest import PrivateRedis

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
PATIENCE = 4.0  # seconds: a generous bound on a 503 that the ingress owes within 1.5 s + 0.05
UNAVAILABLE_BODY = b'{"status":"error","error":"unavailable"}'


async def _until_accepted(session: aiohttp.ClientSession, port: int, first_entity: int) -> list[str]:
    """Post fresh events until one is accepted (bounded); the bodies that were answered 200."""
    for attempt in range(100):
        form = body("m1", TOKEN, entity=first_entity + attempt)
        status, _ = await post_event(session, port, form)
        assert status in (200, 503)
        if status == 200:
            return [form]
        await asyncio.sleep(0.2)
    raise AssertionError("the ingress did not recover")


def _every_200_is_stored(r: redis.Redis, keys: Keys, accepted: list[str]) -> None:
    stored = set(stored_event_ids(r, keys.events_queue))
    missing = [form for form in accepted if event_id(form) not in stored]
    assert not missing, f"{len(missing)} events answered 200 were not stored"


def test_redis_down_is_503_never_200_and_the_ingress_recovers_by_itself(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    seed_portal(private_redis.client(), keys, "m1", TOKEN)
    port = free_port()

    async def scenario() -> list[str]:
        async with aiohttp.ClientSession() as session:
            first = body("m1", TOKEN, entity=1)
            assert (await post_event(session, port, first))[0] == 200
            private_redis.kill()
            for entity in range(2, 8):
                status, answer = await post_event(session, port, body("m1", TOKEN, entity=entity), PATIENCE)
                assert (status, answer) == (503, UNAVAILABLE_BODY)
            private_redis.start()
            seed_portal(private_redis.client(), keys, "m1", TOKEN)  # a crash may lose the last second
            return [first, *(await _until_accepted(session, port, 100))]

    with ingress_process(private_env, port) as process:
        accepted = asyncio.run(scenario())
        assert process.poll() is None  # recovered without a restart
    _every_200_is_stored(private_redis.client(), keys, accepted[1:])


def test_stalled_redis_is_503_in_time_and_the_ingress_recovers(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """SIGSTOP: connections stay open and nothing answers. A portal already cached and one
    whose tokens must still be read both get their 503 in time: the token read and the
    write share one deadline."""
    client = private_redis.client()
    seed_portal(client, keys, "m1", TOKEN)
    seed_portal(client, keys, "m2", TOKEN)
    port = free_port()

    async def scenario() -> list[str]:
        async with aiohttp.ClientSession() as session:
            first = body("m1", TOKEN, entity=1)
            assert (await post_event(session, port, first))[0] == 200
            private_redis.pause()
            try:
                stuck = asyncio.create_task(post_event(session, port, body("m1", TOKEN, entity=2), PATIENCE))
                await asyncio.sleep(0.3)  # its write is on its way to the stalled server
                behind = await asyncio.gather(  # these wait behind it, each with its own deadline
                    post_event(session, port, body("m2", TOKEN, entity=3), PATIENCE),
                    post_event(session, port, body("m1", TOKEN, entity=4), PATIENCE),
                )
                assert [status for status, _ in [await stuck, *behind]] == [503, 503, 503]
            finally:
                private_redis.resume()
            recovered = await _until_accepted(session, port, 100)
            status, _ = await post_event(session, port, body("m2", TOKEN, entity=5))
            assert status == 200
            return [first, *recovered, body("m2", TOKEN, entity=5)]

    with ingress_process(private_env, port) as process:
        accepted = asyncio.run(scenario())
        assert process.poll() is None
    _every_200_is_stored(client, keys, accepted)


def test_a_quarantined_event_is_503_in_time_when_redis_stalls(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """An event carrying a pending install's token is held in the quarantine list: that
    write obeys the same deadline as a job's, so a stall answers 503, never a hang."""
    client = private_redis.client()
    seed_pending(client, keys, "m3", TOKEN)
    port = free_port()

    async def scenario() -> tuple[list[int], str]:
        async with aiohttp.ClientSession() as session:
            assert (await post_event(session, port, body("m3", TOKEN, entity=1)))[0] == 200
            private_redis.pause()
            try:
                stalled = await post_event(session, port, body("m3", TOKEN, entity=2), PATIENCE)
            finally:
                private_redis.resume()
            assert stalled == (503, UNAVAILABLE_BODY)
            accepted = (await post_event(session, port, body("m3", TOKEN, entity=3)))[0]
            await asyncio.sleep(0.6)  # metrics are flushed every 0.5 s
            return [accepted], await metrics_text(session, port)

    with ingress_process(private_env, port) as process:
        answers, metrics = asyncio.run(scenario())
        assert answers == [200]
        # the stalled write was answered by the event path's deadline, and counted
        assert re.search(r'b24pipe_ingress_rejections_total\{reason="unavailable"\} 1\.0', metrics)
        assert process.poll() is None
    held = [
        orjson.loads(raw)["data"]["FIELDS"]["ID"]
        for raw in client.lrange(keys.quarantine("m3", digest(TOKEN)), 0, -1)
    ]
    assert "1" in held and "3" in held


def test_in_flight_requests_are_capped(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """With Redis stalled, requests wait for their deadline; past the cap the ingress
    answers 503 at once instead of holding more. (Ten portals: one portal alone would stop
    at half the cap, `ingress.admission`.)"""
    members = [f"m{n}" for n in range(10)]
    for member in members:
        seed_portal(private_redis.client(), keys, member, TOKEN)
    port = free_port()
    env = {**private_env, "B24PIPE_MAX_INFLIGHT": "4", "B24PIPE_ENQUEUE_TIMEOUT": "3"}

    async def scenario() -> tuple[list[int], str]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            assert (await post_event(session, port, body("m1", TOKEN, entity=1)))[0] == 200
            private_redis.pause()
            try:
                answers = await asyncio.gather(
                    *(post_event(session, port, body(member, TOKEN, entity=10)) for member in members)
                )
                metrics = await metrics_text(session, port)
            finally:
                private_redis.resume()
            return [status for status, _ in answers], metrics

    with ingress_process(env, port):
        statuses, metrics = asyncio.run(scenario())
    assert statuses == [503] * 10
    assert re.search(
        r'b24pipe_ingress_requests_total\{event="ONCRMDEALUPDATE",outcome="overloaded"\} 6\.0', metrics
    )
    assert re.search(
        r'b24pipe_ingress_requests_total\{event="ONCRMDEALUPDATE",outcome="unavailable"\} 4\.0', metrics
    )
    assert re.search(r"b24pipe_ingress_inflight 0\.0", metrics)


def test_redis_out_of_memory_is_503_and_nothing_is_half_written(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """Under `noeviction` a full Redis refuses writes: 503, and not a key is left behind
    (no job without its queue entry, no dedupe key that would later swallow the event)."""
    client = private_redis.client()
    seed_portal(client, keys, "m1", TOKEN)
    port = free_port()
    events = [body("m1", TOKEN, entity=10 + n) for n in range(5)]

    async def post_all(session: aiohttp.ClientSession) -> list[tuple[int, bytes]]:
        return list(await asyncio.gather(*(post_event(session, port, form, PATIENCE) for form in events)))

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            assert (await post_event(session, port, body("m1", TOKEN, entity=1)))[0] == 200
            before = set(client.scan_iter(count=1000))
            client.config_set("maxmemory", 1)
            try:
                assert await post_all(session) == [(503, UNAVAILABLE_BODY)] * 5
                assert set(client.scan_iter(count=1000)) == before
            finally:
                client.config_set("maxmemory", 0)
            assert [status for status, _ in await post_all(session)] == [200] * 5

    with ingress_process(private_env, port):
        asyncio.run(scenario())
    assert len(queued(client, keys.events_queue)) == 6
    _every_200_is_stored(client, keys, events)
