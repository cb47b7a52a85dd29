"""Coalescing groups against a real Redis: a burst runs a handler once, on the latest event."""

from __future__ import annotations

import multiprocessing
import random
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from shared.events import Event, entity_of
from shared.keys import Keys
from shared.settings import Settings, load_settings
from workers.coalesce import Arrival, Coalescer, merge_slot, order_key


def _event(name: str, entity: int | None, ts: int, member: str = "m1", received_at: float = 0.0,
           attempt: int = 1) -> Event:  # fmt: skip
    data = {"FIELDS": {"ID": entity}} if entity is not None else {}
    entity_type, entity_id = entity_of(name, data)
    return Event(id=f"{member}-{name}-{entity}-{ts}-{received_at}", name=name, member_id=member,
                 entity_type=entity_type, entity_id=entity_id, data=data, ts=ts, received_at=received_at,
                 attempt=attempt)  # fmt: skip


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
    for _ in range(3):
        assert coalescer.arrive(event, "h") is Arrival.RUN
        assert coalescer.claim_latest(event, "h") == event


def test_burst_runs_once_on_the_latest(coalescer: Coalescer, r: redis.Redis, keys: Keys) -> None:
    before = REGISTRY.get_sample_value("b24pipe_coalesced_total", {"event": "ONCRMDEALUPDATE"}) or 0.0
    burst = [_event("ONCRMDEALUPDATE", 5, ts, received_at=ts / 10) for ts in (3, 1, 7, 2, 7, 5)]
    leader = burst[0].model_copy(update={"attempt": 2})
    assert coalescer.arrive(leader, "h") is Arrival.LEAD
    assert coalescer.arrive(leader, "h") is Arrival.LEAD  # the leader's job ran again: still the leader
    assert [coalescer.arrive(e, "h") for e in burst[1:]] == [Arrival.MERGED] * 5
    assert r.pttl(keys.latest("m1", "ONCRMDEALUPDATE", "deal:5", "h")) > 0
    latest = coalescer.claim_latest(leader, "h")
    assert latest is not None
    assert (latest.ts, latest.id) == (7, burst[2].id)  # newest by ts; equal ts: first seen is kept
    assert latest.attempt == 2  # the job's attempt, not the payload's
    after = REGISTRY.get_sample_value("b24pipe_coalesced_total", {"event": "ONCRMDEALUPDATE"})
    assert after == before + 5
    assert r.exists(keys.latest("m1", "ONCRMDEALUPDATE", "deal:5", "h")) == 0
    # claimed again (retry of the leader's job): no group any more, it runs its own event
    assert coalescer.claim_latest(leader, "h") == leader
    # a change after the claim starts a new group
    assert coalescer.arrive(_event("ONCRMDEALUPDATE", 5, 8), "h") is Arrival.LEAD


def test_groups_are_per_handler_portal_event_and_entity(coalescer: Coalescer) -> None:
    first = _event("ONCRMDEALUPDATE", 5, 1)
    assert coalescer.arrive(first, "a") is Arrival.LEAD
    assert coalescer.arrive(first, "b") is Arrival.LEAD
    assert coalescer.arrive(_event("ONCRMDEALUPDATE", 6, 1), "a") is Arrival.LEAD
    assert coalescer.arrive(_event("ONCRMDEALUPDATE", 5, 1, member="m2"), "a") is Arrival.LEAD
    assert coalescer.arrive(_event("ONCRMLEADUPDATE", 5, 1), "a") is Arrival.LEAD
    assert coalescer.arrive(_event("ONCRMDEALUPDATE", 5, 2), "a") is Arrival.MERGED
    other = REGISTRY.get_sample_value("b24pipe_coalesced_total", {"event": "other"}) or 0.0
    assert coalescer.arrive(_event("ONCRMLEADUPDATE", 5, 2), "a") is Arrival.MERGED
    # an event name the dispatcher did not declare is never a label value
    assert REGISTRY.get_sample_value("b24pipe_coalesced_total", {"event": "other"}) == other + 1


def test_old_leader_after_expiry_yields_to_the_new_group(
    coalescer: Coalescer, r: redis.Redis, keys: Keys
) -> None:
    old = _event("ONCRMDEALUPDATE", 5, 1)
    new = _event("ONCRMDEALUPDATE", 5, 2)
    assert coalescer.arrive(old, "h") is Arrival.LEAD
    r.delete(keys.latest("m1", "ONCRMDEALUPDATE", "deal:5", "h"))  # the group expired
    assert coalescer.arrive(new, "h") is Arrival.LEAD
    assert coalescer.claim_latest(old, "h") is None  # the newer group will run
    assert coalescer.claim_latest(new, "h") == new


def _dispatch_worker(url: str, ns: str, queue_key: str, runs_key: str) -> None:
    """A stand-in dispatcher: pass one `arrive`s (leaders go back to the tail: delay 0),
    pass two `claim_latest`s and records the handler run."""
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
        event = Event.model_validate(item["event"])
        if item["pass"] == 1:
            arrival = coalescer.arrive(event, "h")
            if arrival is Arrival.LEAD:
                client.rpush(queue_key, orjson.dumps({"pass": 2, "event": item["event"]}))
                continue
            if arrival is Arrival.MERGED:
                continue
            target: Event | None = event
        else:
            target = coalescer.claim_latest(event, "h")
        if target is not None:
            client.rpush(runs_key, target.id)


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
    r.rpush(queue_key, *[orjson.dumps({"pass": 1, "event": e.model_dump(mode="json")}) for e in queued])

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
    print(
        f"\ncoalescing: {len(storm)} update events over {entities} entities -> {len(update_runs)} handler runs"
    )
