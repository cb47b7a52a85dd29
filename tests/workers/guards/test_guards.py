"""Echo suppression and the loop breaker, against a real Redis, with racing processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared.events import Event, entity_of
from shared.keys import Keys
from shared.settings import Settings, load_settings
from workers.errors import Permanent
from workers.guards.loop import EchoGuard, EchoMarker, LoopBreaker, LoopCut

WRITER = 7
HUMAN = 42


def _event(name: str, entity: int | None, user: int | None, eid: str = "", member: str = "m1") -> Event:
    data = {"FIELDS": {"ID": entity}} if entity is not None else {}
    entity_type, entity_id = entity_of(name, data)
    return Event(id=eid or f"{name}-{entity}-{user}-{time.monotonic_ns()}", name=name, member_id=member,
                 user_id=user, entity_type=entity_type, entity_id=entity_id, data=data, ts=1)  # fmt: skip


def _mark(
    settings: Settings, method: str, params: dict[str, Any], writer: int | None = WRITER, member: str = "m1"
):
    async def go():
        client = aioredis.Redis.from_url(str(settings.redis_url))
        try:
            return await EchoMarker(client, settings).mark(member, writer, method, params)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _suppressed(event: str) -> float:
    return REGISTRY.get_sample_value("b24pipe_echo_suppressed_total", {"event": event}) or 0.0


@pytest.fixture
def guard(r: redis.Redis, settings: Settings) -> EchoGuard:
    return EchoGuard(r, settings)


def test_one_write_suppresses_exactly_its_echo(guard: EchoGuard, settings: Settings) -> None:
    before = _suppressed("ONCRMDEALUPDATE")
    echoes = _mark(settings, "crm.deal.update", {"id": 5, "fields": {"TITLE": "x"}})
    assert [e.entity_key for e in echoes] == ["deal:5"]
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER)) is True
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER)) is False  # one mark, one echo
    assert _suppressed("ONCRMDEALUPDATE") == before + 1


def test_other_users_other_entities_and_entityless_events_are_never_suppressed(
    guard: EchoGuard, settings: Settings, r: redis.Redis, keys: Keys
) -> None:
    _mark(settings, "crm.deal.update", {"id": 5})
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, HUMAN)) is False
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, None)) is False
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, 0)) is False
    assert guard.consume(_event("ONCRMDEALUPDATE", 6, WRITER)) is False
    assert guard.consume(_event("ONCRMLEADUPDATE", 5, WRITER)) is False
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER, member="m2")) is False
    assert guard.consume(_event("ONCRMDEALUPDATE", None, WRITER)) is False
    assert (
        r.llen(keys.echo_marks("m1", "deal:5", "ONCRMDEALUPDATE", WRITER)) == 1
    )  # still waiting for its echo
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER)) is True


def test_unknown_writer_marks_nothing(guard: EchoGuard, settings: Settings) -> None:
    assert _mark(settings, "crm.deal.update", {"id": 5}, writer=None) == []
    assert _mark(settings, "crm.deal.get", {"id": 5}) == []
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER)) is False


def test_expired_marks_suppress_nothing(
    guard: EchoGuard, settings: Settings, r: redis.Redis, keys: Keys
) -> None:
    _mark(settings, "crm.deal.update", {"id": 5})
    _mark(settings, "crm.deal.update", {"id": 5})
    key = keys.echo_marks("m1", "deal:5", "ONCRMDEALUPDATE", WRITER)
    assert r.pttl(key) > (settings.echo_ttl - 5) * 1000
    past = str(int(time.time() * 1000) - 1)
    r.lset(key, 0, past)
    r.lset(key, 1, past)
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER)) is False
    assert r.exists(key) == 0  # expired marks are dropped on the way


def test_add_echo_consumes_the_type_mark(guard: EchoGuard, settings: Settings) -> None:
    _mark(settings, "crm.deal.add", {"fields": {"TITLE": "new"}})
    assert guard.consume(_event("ONCRMDEALUPDATE", 99, WRITER)) is False  # not an add
    assert guard.consume(_event("ONCRMDEALADD", 99, HUMAN)) is False
    assert guard.consume(_event("ONCRMDEALADD", 99, WRITER)) is True
    assert guard.consume(_event("ONCRMDEALADD", 100, WRITER)) is False


def test_batch_marks_every_command_and_release_undoes_a_refused_write(
    guard: EchoGuard, settings: Settings
) -> None:
    cmd = {f"c{i}": f"crm.deal.update?id={i}&fields%5BTITLE%5D=x" for i in range(1, 4)}
    echoes = _mark(settings, "batch", {"halt": 0, "cmd": cmd})
    assert len(echoes) == 3
    assert all(guard.consume(_event("ONCRMDEALUPDATE", i, WRITER)) for i in range(1, 4))

    refused = _mark(settings, "crm.deal.update", {"id": 8})

    async def release():
        client = aioredis.Redis.from_url(str(settings.redis_url))
        try:
            await EchoMarker(client, settings).release("m1", WRITER, refused)
        finally:
            await client.aclose()

    asyncio.run(release())
    assert guard.consume(_event("ONCRMDEALUPDATE", 8, WRITER)) is False


def _race_worker(url: str, ns: str, rounds: int, queue: Any) -> None:
    """Mark one write, then try to consume two echoes, `rounds` times, racing the others."""
    settings = load_settings(redis_url=url, namespace=ns)
    client = redis.Redis.from_url(url)
    guard = EchoGuard(client, settings)

    async def marks() -> int:
        aclient = aioredis.Redis.from_url(url)
        marker = EchoMarker(aclient, settings)
        consumed = 0
        for _ in range(rounds):
            await marker.mark("m1", WRITER, "crm.deal.update", {"id": 5})
            for _ in range(2):
                consumed += guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER))
        await aclient.aclose()
        return consumed

    queue.put(asyncio.run(marks()))


def test_racing_processes_never_lose_or_double_consume_marks(
    redis_url: str, ns: str, r: redis.Redis, keys: Keys
) -> None:
    processes, rounds = 4, 150
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_race_worker, args=(redis_url, ns, rounds, queue)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    consumed = sum(queue.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    left = r.llen(keys.echo_marks("m1", "deal:5", "ONCRMDEALUPDATE", WRITER))
    assert consumed + left == processes * rounds  # nothing lost, nothing consumed twice
    guard = EchoGuard(r, load_settings(redis_url=redis_url, namespace=ns))
    drained = sum(guard.consume(_event("ONCRMDEALUPDATE", 5, WRITER)) for _ in range(left + 5))
    assert drained == left


# --- loop breaker --------------------------------------------------------------------------


@pytest.fixture
def breaker(r: redis.Redis, settings: Settings) -> LoopBreaker:
    return LoopBreaker(r, settings.model_copy(update={"loop_bound": 3, "loop_window": 60}))


def _cuts() -> float:
    return REGISTRY.get_sample_value("b24pipe_loop_cut_total", {"event": "ONCRMDEALUPDATE"}) or 0.0


def test_entity_we_never_wrote_is_never_cut(breaker: LoopBreaker, settings: Settings) -> None:
    before = _cuts()
    for _ in range(20):
        breaker.check(_event("ONCRMDEALUPDATE", 5, 0))  # raises LoopCut if it were cut
    assert _cuts() == before
    # the same robot chain on an entity we wrote is cut: the bound was reachable
    _mark(settings, "crm.deal.update", {"id": 6})
    with pytest.raises(LoopCut):
        for _ in range(20):
            breaker.check(_event("ONCRMDEALUPDATE", 6, 0))


def test_robot_echo_chain_is_cut_past_the_bound(
    breaker: LoopBreaker, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    before = _cuts()
    for user in (0, WRITER, None):  # a robot, our own writer (an echo that escaped), unknown
        _mark(settings, "crm.deal.update", {"id": 5})
        breaker.check(_event("ONCRMDEALUPDATE", 5, user))
    _mark(settings, "crm.deal.update", {"id": 5})
    caplog.set_level(logging.WARNING, logger="b24pipe.guards")
    with pytest.raises(LoopCut, match=r"more than 3 .* on deal:5") as cut:
        breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
    assert isinstance(cut.value, Permanent)  # parked in the failed registry, not retried
    assert _cuts() == before + 1
    assert any(record.getMessage() == "loop cut" for record in caplog.records)
    with pytest.raises(LoopCut):  # still cut: further runs on the entity too
        breaker.check(_event("ONCRMDEALUPDATE", 5, WRITER))
    breaker.check(_event("ONCRMDEALUPDATE", 6, 0))  # other entities are not affected


def test_a_retried_event_counts_once(breaker: LoopBreaker, settings: Settings) -> None:
    _mark(settings, "crm.deal.update", {"id": 5})
    event = _event("ONCRMDEALUPDATE", 5, 0, eid="same")
    for _ in range(10):
        breaker.check(event)
    breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
    breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
    with pytest.raises(LoopCut):
        breaker.check(_event("ONCRMDEALUPDATE", 5, 0))


def test_busy_entity_changed_by_people_is_not_a_loop(breaker: LoopBreaker, settings: Settings) -> None:
    before = _cuts()
    for _ in range(25):
        breaker.check(_event("ONCRMDEALUPDATE", 5, HUMAN))
        _mark(settings, "crm.deal.update", {"id": 5})  # the handler answers every human change
    for _ in range(3):  # and a person's change resets the chain of robot echoes
        breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
        breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
        breaker.check(_event("ONCRMDEALUPDATE", 5, HUMAN))
    assert _cuts() == before
    # without the person in between, the same robot chain is cut
    with pytest.raises(LoopCut):
        for _ in range(4):
            breaker.check(_event("ONCRMDEALUPDATE", 5, 0))


def test_cycles_leave_the_window(
    breaker: LoopBreaker, settings: Settings, r: redis.Redis, keys: Keys
) -> None:
    _mark(settings, "crm.deal.update", {"id": 5})
    for _ in range(3):
        breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
    with pytest.raises(LoopCut):
        breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
    cycles = keys.chain_cycles("m1", "deal:5")
    members: list[bytes] = r.zrange(cycles, 0, -1)  # type: ignore[assignment]
    r.zadd(cycles, dict.fromkeys(members, 0))  # as if they happened long ago
    breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
    assert 0 < r.pttl(keys.chain("m1", "deal:5")) <= settings.loop_window * 1000


def test_racing_checks_allow_exactly_the_bound(breaker: LoopBreaker, settings: Settings) -> None:
    _mark(settings, "crm.deal.update", {"id": 5})
    allowed: list[str] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            breaker.check(_event("ONCRMDEALUPDATE", 5, 0, eid=f"e{index}"))
        except LoopCut:
            return
        with lock:
            allowed.append(f"e{index}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 3
