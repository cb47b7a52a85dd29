"""Coalescing groups at their edges, against a real Redis: the lifetimes of groups and claims,
the max-wait bound to the millisecond, arrival order on a ts tie, batch items per event
name, a client that decodes answers, and releasing nothing. Found by `make mutate`
(workers/guards/coalesce.py)."""

from __future__ import annotations

import redis

from shared.events import Event, entity_of
from shared.keys import Keys
from shared.settings import Settings
from workers.guards.coalesce import ArrivalVerdict, Coalescer, Grouping

PER_ENTITY = Grouping("h", batch=False, coalesce=True, delay=0.0)
BATCH = Grouping("b", batch=True, coalesce=True, delay=0.0)


def _event(name: str, entity: int, ts: int, received_at: float = 0.0, eid: str | None = None) -> Event:
    data = {"FIELDS": {"ID": entity}}
    entity_type, entity_id = entity_of(name, data)
    return Event(
        id=eid or f"{name}-{entity}-{ts}-{received_at}",
        name=name,
        member_id="m1",
        entity_type=entity_type,
        entity_id=entity_id,
        data=data,
        ts=ts,
        received_at=received_at,
    )


def test_group_and_claim_lifetimes(r: redis.Redis, settings: Settings, keys: Keys) -> None:
    coalescer = Coalescer(r, settings)
    event = _event("ONCRMDEALUPDATE", 5, 1)
    assert coalescer.arrive("lead", event, PER_ENTITY).verdict is ArrivalVerdict.HOLD
    group_ttl = r.pttl(keys.coalesce_group("m1", "h", "ONCRMDEALUPDATE:deal:5"))
    assert settings.coalesce_ttl * 1000 - 10_000 < group_ttl <= settings.coalesce_ttl * 1000
    assert coalescer.arrive("lead", event, PER_ENTITY).verdict is ArrivalVerdict.RUN
    claim = keys.coalesce_claim("m1", "h", "lead")
    claim_ttl_ms = (settings.failed_ttl + int(settings.retry_max) + 3600) * 1000
    assert claim_ttl_ms - 10_000 < r.pttl(claim) <= claim_ttl_ms  # outlives the failed registry
    coalescer.release("m1", ["h"], "lead")
    assert not r.exists(claim)


def test_a_busy_group_is_held_no_longer_than_max_wait(r: redis.Redis, settings: Settings) -> None:
    coalescer = Coalescer(r, settings.model_copy(update={"coalesce_max_wait": 1000.0}))
    how = Grouping("h", batch=False, coalesce=True, delay=3000.0)
    event = _event("ONCRMDEALUPDATE", 5, 1)
    assert coalescer.arrive("lead", event, how).after == 3000.0
    held = coalescer.arrive("lead", event, how)
    assert held.verdict is ArrivalVerdict.HOLD and 990.0 < held.after <= 1000.0


def test_on_a_ts_tie_the_later_arrival_wins(r: redis.Redis, settings: Settings) -> None:
    coalescer = Coalescer(r, settings)
    early = _event("ONCRMDEALUPDATE", 5, 7, received_at=100.0, eid="z-early")
    late = _event("ONCRMDEALUPDATE", 5, 7, received_at=200.0, eid="a-late")  # smaller id: not the tiebreak
    assert coalescer.arrive("lead", early, PER_ENTITY).verdict is ArrivalVerdict.HOLD
    assert coalescer.arrive("other", late, PER_ENTITY).verdict is ArrivalVerdict.MERGED
    assert coalescer.arrive("lead", early, PER_ENTITY).events == (late,)


def test_batch_items_are_per_event_name_and_entity(r: redis.Redis, settings: Settings) -> None:
    coalescer = Coalescer(r, settings)
    deal = _event("ONCRMDEALUPDATE", 5, 1)
    other = _event("ONCRMDEALMOVETOCATEGORY", 5, 2)  # the same deal, another event: both stay
    assert coalescer.arrive("lead", deal, BATCH).verdict is ArrivalVerdict.HOLD
    assert coalescer.arrive("other", other, BATCH).verdict is ArrivalVerdict.MERGED
    run = coalescer.arrive("lead", deal, BATCH)
    assert run.verdict is ArrivalVerdict.RUN and {e.id for e in run.events} == {deal.id, other.id}


def test_a_decoding_client_and_releasing_nothing(redis_url: str, settings: Settings, keys: Keys) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        coalescer = Coalescer(client, settings)
        event = _event("ONCRMDEALUPDATE", 6, 1)
        assert coalescer.arrive("lead", event, PER_ENTITY).verdict is ArrivalVerdict.HOLD
        assert coalescer.arrive("lead", event, PER_ENTITY).events == (event,)
        coalescer.release("m1", [], "lead")  # no handler succeeded: nothing to forget
        assert client.exists(keys.coalesce_claim("m1", "h", "lead"))
        coalescer.release("m1", ["h"], None)
        assert client.exists(keys.coalesce_claim("m1", "h", "lead"))
        for key in client.scan_iter(match=f"*{keys.ns}*"):
            client.delete(key)
    finally:
        client.close()
