"""Coalescing and batch groups against a real Redis: a burst runs a handler once, on the latest."""

from __future__ import annotations

import multiprocessing
import random
import time
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from shared.events import Event, entity_of
from shared.keys import Keys
from shared.settings import Settings, load_settings
from workers.guards.coalesce import ArrivalVerdict, Coalescer, Grouping, merge_slot, order_key

PER_ENTITY = Grouping("h", batch=False, coalesce=True, delay=0.0)


def _event(name: str, entity: int | None, ts: int, member: str = "m1", received_at: float = 0.0,
           attempt: int = 1) -> Event:  # fmt: skip
    data = {"FIELDS": {"ID": entity}} if entity is not None else {}
    entity_type, entity_id = entity_of(name, data)
    return Event(id=f"{member}-{name}-{entity}-{ts}-{received_at}", name=name, member_id=member,
                 entity_type=entity_type, entity_id=entity_id, data=data, ts=ts, received_at=received_at,
                 attempt=attempt)  # fmt: skip


def _merged(event: str = "ONCRMDEALUPDATE") -> float:
    return REGISTRY.get_sample_value("b24pipe_coalesced_total", {"event": event}) or 0.0


@pytest.fixture
def coalescer(r: redis.Redis, settings: Settings) -> Coalescer:
    return Coalescer(r, settings, known_events={"ONCRMDEALUPDATE"})


@pytest.mark.parametrize(
    "event",
    [
        _event("ONCRMDEALADD", 5, 1),
        _event("ONCRMDEALDELETE", 5, 1),
        _event("ONTASKCOMMENTADD", 5, 1),
        _event("ONCRMDEALUPDATE", None, 1),
        _event("ONAPPTEST", None, 1),
    ],
)
def test_adds_deletes_and_entityless_events_always_run(coalescer: Coalescer, event: Event) -> None:
    for job in ("j1", "j2", "j3"):
        arrival = coalescer.arrive(job, event, PER_ENTITY)
        assert arrival.verdict is ArrivalVerdict.RUN and arrival.events == (event,)


def test_without_a_job_id_nothing_is_grouped(coalescer: Coalescer) -> None:
    event = _event("ONCRMDEALUPDATE", 5, 1)
    assert coalescer.arrive(None, event, PER_ENTITY).events == (event,)


def test_burst_runs_once_on_the_latest_and_the_claim_survives_a_rerun(
    coalescer: Coalescer, r: redis.Redis, keys: Keys
) -> None:
    before = _merged()
    burst = [_event("ONCRMDEALUPDATE", 5, ts, received_at=ts / 10) for ts in (3, 1, 7, 2, 7, 5)]
    jobs = [f"job{i}" for i in range(len(burst))]
    assert coalescer.arrive(jobs[0], burst[0], PER_ENTITY).verdict is ArrivalVerdict.HOLD
    # the same event delivered twice is two jobs: the second one is merged, not a second leader
    assert coalescer.arrive("dup", burst[0], PER_ENTITY).verdict is ArrivalVerdict.MERGED
    assert [coalescer.arrive(j, e, PER_ENTITY).verdict for j, e in zip(jobs[1:], burst[1:], strict=True)] == [
        ArrivalVerdict.MERGED
    ] * 5
    assert _merged() == before + 6
    assert r.pttl(keys.coalesce_group("m1", "h", "ONCRMDEALUPDATE:deal:5")) > 0

    leader = burst[0].model_copy(update={"attempt": 2})
    run = coalescer.arrive(jobs[0], leader, PER_ENTITY)
    assert run.verdict is ArrivalVerdict.RUN and len(run.events) == 1
    assert (run.events[0].ts, run.events[0].id) == (7, burst[2].id)  # newest by ts; a tie: first seen
    assert run.events[0].attempt == 2  # the job's attempt, not the payload's
    assert r.exists(keys.coalesce_group("m1", "h", "ONCRMDEALUPDATE:deal:5")) == 0

    # a new change after the claim opens a new group ...
    assert (
        coalescer.arrive("later", _event("ONCRMDEALUPDATE", 5, 8), PER_ENTITY).verdict is ArrivalVerdict.HOLD
    )
    # ... while the leader's job, run again (killed worker, retry), still gets its claim
    assert coalescer.arrive(jobs[0], leader, PER_ENTITY).events == run.events
    coalescer.release("m1", ["h"], jobs[0])
    assert r.exists(keys.coalesce_claim("m1", "h", jobs[0])) == 0


def test_leader_waits_for_quiet_but_no_longer_than_max_wait(r: redis.Redis, settings: Settings) -> None:
    coalescer = Coalescer(r, settings.model_copy(update={"coalesce_max_wait": 1.0}))
    how = Grouping("h", batch=False, coalesce=True, delay=5.0)  # never quiet for 5 s: max wait decides
    first = coalescer.arrive("lead", _event("ONCRMDEALUPDATE", 5, 0), how)
    assert first.verdict is ArrivalVerdict.HOLD and first.after == 5.0
    started = time.monotonic()
    ts = 1
    held = first
    while held.verdict is ArrivalVerdict.HOLD:  # a busy entity: a new event every 0.1 s, forever
        assert (
            coalescer.arrive(f"j{ts}", _event("ONCRMDEALUPDATE", 5, ts), how).verdict is ArrivalVerdict.MERGED
        )
        ts += 1
        time.sleep(0.1)
        held = coalescer.arrive("lead", _event("ONCRMDEALUPDATE", 5, 0), how)
        assert held.verdict is ArrivalVerdict.RUN or 0 < held.after <= 1.0  # held no longer than what is left
        assert time.monotonic() - started < 30
    assert held.events[0].ts == ts - 1  # the newest merged event
    assert time.monotonic() - started >= 0.9


def test_a_quiet_group_runs_after_its_delay(coalescer: Coalescer) -> None:
    how = Grouping("h", batch=False, coalesce=True, delay=0.2)
    assert coalescer.arrive("lead", _event("ONCRMDEALUPDATE", 5, 0), how).verdict is ArrivalVerdict.HOLD
    assert coalescer.arrive("other", _event("ONCRMDEALUPDATE", 5, 1), how).verdict is ArrivalVerdict.MERGED
    time.sleep(0.3)
    run = coalescer.arrive("lead", _event("ONCRMDEALUPDATE", 5, 0), how)
    assert run.verdict is ArrivalVerdict.RUN and run.events[0].ts == 1


def test_groups_are_per_handler_portal_event_and_entity(coalescer: Coalescer) -> None:
    other = Grouping("other", batch=False, coalesce=True, delay=0.0)
    assert coalescer.arrive("a", _event("ONCRMDEALUPDATE", 5, 1), PER_ENTITY).verdict is ArrivalVerdict.HOLD
    assert coalescer.arrive("a", _event("ONCRMDEALUPDATE", 5, 1), other).verdict is ArrivalVerdict.HOLD
    assert coalescer.arrive("b", _event("ONCRMDEALUPDATE", 6, 1), PER_ENTITY).verdict is ArrivalVerdict.HOLD
    assert (
        coalescer.arrive("c", _event("ONCRMDEALUPDATE", 5, 1, member="m2"), PER_ENTITY).verdict
        is ArrivalVerdict.HOLD
    )
    assert coalescer.arrive("d", _event("ONCRMLEADUPDATE", 5, 1), PER_ENTITY).verdict is ArrivalVerdict.HOLD
    assert coalescer.arrive("e", _event("ONCRMDEALUPDATE", 5, 2), PER_ENTITY).verdict is ArrivalVerdict.MERGED
    before = _merged("other")
    assert coalescer.arrive("f", _event("ONCRMLEADUPDATE", 5, 2), PER_ENTITY).verdict is ArrivalVerdict.MERGED
    # an event name the dispatcher did not declare is never a label value
    assert _merged("other") == before + 1


@pytest.mark.parametrize("coalesce", [True, False])
def test_batch_group_gives_the_portals_waiting_events_as_one_list(
    coalescer: Coalescer, coalesce: bool
) -> None:
    how = Grouping("batch", batch=True, coalesce=coalesce, delay=0.0)
    events = [
        _event("ONCRMDEALUPDATE", 1, 10, received_at=1),
        _event("ONCRMDEALUPDATE", 2, 11, received_at=2),
        _event("ONCRMDEALADD", 3, 12, received_at=3),
        _event("ONCRMDEALUPDATE", 1, 13, received_at=4),
        _event("ONCRMDEALUPDATE", None, 14, received_at=5),
        _event("ONCRMDEALDELETE", 3, 15, received_at=6),
        _event("ONCRMDEALUPDATE", 1, 9, received_at=7),  # reordered: older than ts 13
    ]
    assert coalescer.arrive("j0", events[0], how).verdict is ArrivalVerdict.HOLD
    for index, event in enumerate(events[1:], start=1):
        assert coalescer.arrive(f"j{index}", event, how).verdict is ArrivalVerdict.MERGED
    assert coalescer.arrive("other-portal", _event("ONCRMDEALUPDATE", 1, 1, member="m2"), how).verdict is (
        ArrivalVerdict.HOLD
    )
    run = coalescer.arrive("j0", events[0], how)
    assert run.verdict is ArrivalVerdict.RUN
    if coalesce:  # the newest update per deal, every add, delete and entityless event, arrival order
        assert [e.ts for e in run.events] == [11, 12, 13, 14, 15]
    else:
        assert [e.ts for e in run.events] == [e.ts for e in events]
    lifecycle = _event("ONAPPUPDATE", None, 1)
    assert coalescer.arrive("j9", lifecycle, how).events == (lifecycle,)  # never held


def _dispatch_worker(url: str, ns: str, queue_key: str, runs_key: str) -> None:
    """A stand-in dispatcher: held leaders go back to the tail (delay 0), runs are recorded."""
    settings = load_settings(redis_url=url, namespace=ns)
    client = redis.Redis.from_url(url)
    coalescer = Coalescer(client, settings)
    idle = 0
    while idle < 3:
        raw = client.lpop(queue_key)
        if not isinstance(raw, bytes):
            idle += 1
            client.blpop([queue_key + ":never"], timeout=0.05)
            continue
        idle = 0
        item: dict[str, Any] = orjson.loads(raw)
        arrival = coalescer.arrive(item["job"], Event.model_validate(item["event"]), PER_ENTITY)
        if arrival.verdict is ArrivalVerdict.HOLD:
            client.rpush(queue_key, raw)
        elif arrival.verdict is ArrivalVerdict.RUN:
            client.rpush(runs_key, *(event.id for event in arrival.events))
            coalescer.release(arrival.events[0].member_id, ["h"], item["job"])


def test_storm_in_the_queue_collapses_with_racing_workers(redis_url: str, ns: str, r: redis.Redis) -> None:
    rng = random.Random(6)
    entities = 15
    storm = [
        _event("ONCRMDEALUPDATE", rng.randrange(entities), rng.randrange(1000), received_at=i / 1000)
        for i in range(600)
    ]
    adds = [_event("ONCRMDEALADD", 100 + i, i) for i in range(10)]
    queued = storm + adds
    rng.shuffle(queued)
    queue_key, runs_key = f"{ns}:q", f"{ns}:runs"
    r.rpush(
        queue_key,
        *[orjson.dumps({"job": f"job{i}", "event": e.model_dump(mode="json")}) for i, e in enumerate(queued)],
    )

    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_dispatch_worker, args=(redis_url, ns, queue_key, runs_key)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0

    runs = [raw.decode() if isinstance(raw, bytes) else raw for raw in r.lrange(runs_key, 0, -1)]
    update_runs = [run for run in runs if "UPDATE" in run]
    assert sorted(run for run in runs if "ADD" in run) == sorted(e.id for e in adds)  # adds never merged
    for slot in {merge_slot(e) for e in storm}:
        newest = max((e for e in storm if merge_slot(e) == slot), key=order_key)
        assert newest.id in update_runs  # the latest state of every entity is handled
    assert entities <= len(update_runs) <= 2 * entities


def test_handler_options_are_checked_at_registration() -> None:
    from workers.handlers import handler

    with pytest.raises(ValueError, match="delay"):
        handler("ONCRMDEALUPDATE", delay=1.0)  # a delay means nothing without a group
    with pytest.raises(ValueError, match="delay"):
        handler("ONCRMDEALUPDATE", coalesce=True, delay=-1)
