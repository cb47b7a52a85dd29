"""Per-portal admission (`ingress.admission`): the rule, and a real ingress process whose
slots one portal floods while fifty others keep sending."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import body, ingress_process, metrics_text, post_event, seed_portal
from ingress.admission import Slots, admit
from shared.keys import Keys
from tests.conftest import PrivateRedis

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.mark.parametrize(
    ("portal_held", "total_held", "portals_holding", "cap", "admitted"),
    [
        (0, 0, 0, 100, True),  # idle
        (49, 49, 1, 100, True),  # below half the cap: anyone, however much it holds
        (50, 50, 1, 100, False),  # alone at half the cap: the other half stays free
        (0, 50, 1, 100, True),  # a portal holding nothing yet
        (33, 60, 2, 100, False),  # at its share of 100 // 3
        (32, 60, 2, 100, True),
        (0, 99, 60, 100, True),  # a quiet portal while a flood holds most slots
        (1, 99, 60, 100, False),  # 100 // 61 = 1
        (0, 100, 60, 100, False),  # the cap is the cap
        (0, 1, 1, 1, False),
        (0, 0, 0, 1, True),
        (0, 3, 5, 4, True),  # more portals than slots: each still gets one
    ],
)
def test_admit(portal_held: int, total_held: int, portals_holding: int, cap: int, admitted: bool) -> None:
    assert admit(portal_held, total_held, portals_holding, cap) is admitted


def test_slots_count_per_portal_and_give_back() -> None:
    slots = Slots(8)
    assert [slots.take("flood") for _ in range(6)] == [True] * 4 + [False] * 2
    assert slots.take("quiet") and slots.take("other")
    assert slots.held == {"flood": 4, "quiet": 1, "other": 1} and slots.total == 6
    assert slots.take("quiet")  # 8 // 4 = 2 each
    assert not slots.take("quiet")
    for _ in range(4):
        slots.give_back("flood")
    assert "flood" not in slots.held and slots.total == 3
    assert slots.take("flood")


def _inflight(metrics: str) -> int:
    found = re.search(r"^b24pipe_ingress_inflight (\S+)$", metrics, re.MULTILINE)
    return int(float(found.group(1))) if found else -1


def test_a_flooding_portal_gets_503_first_and_quiet_portals_are_accepted(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """Redis stalled, so every admitted request holds its slot: one portal sends 200 events
    at once into a process of 128 slots, then 50 other portals one each. The flood stops at
    half the cap; the quiet portals' events take slots of the other half, and every one is
    accepted once Redis answers again. Without per-portal admission the flood would hold all
    128 slots and the quiet portals would get 503."""
    client = private_redis.client()
    quiet = [f"quiet{n}" for n in range(50)]
    for member in ["flood", *quiet]:
        seed_portal(client, keys, member, TOKEN)
    port = free_port()
    env = {**private_env, "B24PIPE_MAX_INFLIGHT": "128", "B24PIPE_ENQUEUE_TIMEOUT": "30"}

    async def until_inflight(session: aiohttp.ClientSession, count: int) -> None:
        async with asyncio.timeout(60):
            while _inflight(await metrics_text(session, port)) != count:
                await asyncio.sleep(0.1)

    async def scenario() -> tuple[list[int], list[int]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for member in ["flood", *quiet]:  # token caches warm: nothing below reads Redis but the write
                assert (await post_event(session, port, body(member, TOKEN, entity=1)))[0] == 200
            private_redis.pause()
            try:
                flood = [
                    asyncio.create_task(post_event(session, port, body("flood", TOKEN, entity=100 + n)))
                    for n in range(200)
                ]
                await until_inflight(session, 64)
                calm = [
                    asyncio.create_task(post_event(session, port, body(member, TOKEN, entity=2)))
                    for member in quiet
                ]
                await until_inflight(session, 64 + len(quiet))
            finally:
                private_redis.resume()
            flooded = [status for status, _ in await asyncio.gather(*flood)]
            accepted = [status for status, _ in await asyncio.gather(*calm)]
            return flooded, accepted

    with ingress_process(env, port):
        flooded, accepted = asyncio.run(scenario())
    assert accepted == [200] * len(quiet)
    assert sorted(flooded) == [200] * 64 + [503] * 136
