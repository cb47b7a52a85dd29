"""Coalescing wired into dispatch, with real worker processes (handlers in tests/support/coalesce_handlers.py):
a burst of updates runs a handler once per entity on the newest event, adds always run, a
batch handler gets the portal's events as one list, the loop breaker judges the runs (not
the merged events), and a worker killed mid-group loses nothing."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from b24pipe.testing.workers import enqueue_many, seen, start_worker, stop, text, wait_for, worker_env
from shared.events import Event, entity_of
from shared.keys import Keys
from shared.settings import Settings
from workers.guards.loop import EchoMarker


def _event(name: str, entity: int, ts: int, user: int | None = 2, **data: object) -> dict[str, object]:
    payload = {"FIELDS": {"ID": entity}, **data}
    entity_type, entity_id = entity_of(name, payload)
    return Event(id=uuid.uuid4().hex, name=name, member_id="member-a", user_id=user, entity_type=entity_type,
                 entity_id=entity_id, data=payload, ts=ts, received_at=time.time()).model_dump(mode="json")  # fmt: skip


def _env(base_env: dict[str, str], **extra: str) -> dict[str, str]:
    return worker_env(base_env, B24PIPE_HANDLERS="tests.support.coalesce_handlers", **extra)


def _settled(r: redis.Redis, keys: Keys, count: int) -> bool:
    queue = Queue(keys.events_queue, connection=r)
    done = FinishedJobRegistry(queue=queue).count + FailedJobRegistry(queue=queue).count
    return done == count


def test_burst_runs_once_per_entity_on_the_newest_and_adds_always_run(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    burst = [_event("ONCRMLEADUPDATE", 1 + i % 4, ts=i) for i in range(80)]
    adds = [_event("ONCRMLEADADD", 100 + i, ts=i) for i in range(3)]
    enqueue_many(r, keys, burst + adds)
    workers = [start_worker(_env(base_env)) for _ in range(2)]
    try:
        assert wait_for(lambda: _settled(r, keys, len(burst) + len(adds)), timeout=60)
    finally:
        for worker in workers:
            stop(worker)
    ran = [event_id for event_id, _, _ in seen(r, ns, "coalesced")]
    newest = {burst[-4 + k]["id"] for k in range(4)}  # the last event of each of the 4 leads
    assert newest <= set(ran)
    assert {str(e["id"]) for e in adds} <= set(ran)
    assert len([event_id for event_id in ran if event_id in {e["id"] for e in adds}]) == len(adds)
    assert len(ran) - len(adds) <= 8  # 80 updates over 4 entities: a handful of runs, not 80
    assert FailedJobRegistry(queue=Queue(keys.events_queue, connection=r)).count == 0
    assert not list(r.scan_iter(match=f"{ns}:group:*"))  # groups and claims are gone


def test_batch_handler_gets_the_portals_events_as_one_list(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    events = [_event("ONCRMCONTACTUPDATE", 1 + i % 10, ts=i) for i in range(60)]
    enqueue_many(r, keys, events)
    worker = start_worker(_env(base_env))
    try:
        assert wait_for(lambda: _settled(r, keys, len(events)), timeout=60)
    finally:
        stop(worker)
    calls = [text(raw).split(",") for raw in r.lrange(f"{ns}:test:batched", 0, -1)]
    assert len(calls) <= 3
    handled = {event_id for call in calls for event_id in call}
    assert {e["id"] for e in events[-10:]} <= handled  # each contact's newest update
    assert all(len(call) == len(set(call)) <= 10 for call in calls)  # one entry per contact


def _mark_write(settings: Settings, lead: int) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(str(settings.redis_url))
        try:
            await EchoMarker(client, settings).mark("member-a", 7, "crm.lead.update", {"id": lead})
        finally:
            await client.aclose()

    asyncio.run(go())


def test_loop_breaker_counts_the_runs_not_the_merged_events(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str], settings: Settings
) -> None:
    _mark_write(settings, 9)  # we wrote lead 9: robot events of it may be our loop
    robot = [_event("ONCRMLEADUPDATE", 9, ts=i, user=0) for i in range(30)]
    enqueue_many(r, keys, robot)
    worker = start_worker(_env(base_env, B24PIPE_LOOP_BOUND="3"))
    try:
        assert wait_for(lambda: _settled(r, keys, len(robot)), timeout=60)
    finally:
        stop(worker)
    assert FailedJobRegistry(queue=Queue(keys.events_queue, connection=r)).count == 0
    assert robot[-1]["id"] in {event_id for event_id, _, _ in seen(r, ns, "coalesced")}
    # each run on the entity counted as one cycle; 30 merged events would have been cut
    assert 1 <= r.zcard(keys.chain_cycles("member-a", "lead:9")) <= 3


def test_worker_killed_mid_group_loses_nothing(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    env = _env(base_env, B24PIPE_RECOVERY_AFTER="3")
    burst = [_event("ONCRMLEADUPDATE", 5, ts=i) for i in range(20)]
    burst.append(_event("ONCRMLEADUPDATE", 5, ts=99, sleep=60))  # the newest: its run hangs
    victim = start_worker(env)
    try:
        enqueue_many(r, keys, burst)
        assert wait_for(lambda: r.llen(f"{ns}:test:coalesced-started") == 1, timeout=60)
        assert text(r.lindex(f"{ns}:test:coalesced-started", 0)) == burst[-1]["id"]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        rescuer = start_worker(env)
        try:
            assert wait_for(lambda: _settled(r, keys, len(burst)), timeout=60)
        finally:
            stop(rescuer)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    ran = [event_id for event_id, _, _ in seen(r, ns, "coalesced")]
    assert ran == [burst[-1]["id"]]  # the claimed newest event ran again after the kill, once
    assert not list(r.scan_iter(match=f"{ns}:group:*"))
