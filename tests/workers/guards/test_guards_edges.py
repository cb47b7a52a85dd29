"""Echo marks and the loop breaker at their edges, against a real Redis: user ids 0 and 1,
a release without a writer, batch commands released, the mark's lifetime, and what the
guards log. Found by `make mutate` (workers/guards/loop.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from shared.keys import Keys
from shared.settings import Settings
from tests.support.secretscan import RawLog
from tests.workers.guards.test_guards import _event, _mark
from workers.guards.loop import EchoGuard, EchoMarker, LoopBreaker, LoopCut

UPDATE = ("crm.deal.update", {"id": 5, "fields": {"TITLE": "x"}})


def _marker_call(settings: Settings, call: str, *args: Any) -> Any:
    async def go() -> Any:
        client = aioredis.Redis.from_url(str(settings.redis_url))
        try:
            return await getattr(EchoMarker(client, settings), call)(*args)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_user_one_is_a_writer_and_user_zero_is_not(r: redis.Redis, settings: Settings) -> None:
    guard = EchoGuard(r, settings)
    assert _mark(settings, *UPDATE, writer=0) == []  # the system user: nothing is marked
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, 0)) is False
    assert [e.entity_key for e in _mark(settings, *UPDATE, writer=1)] == ["deal:5"]  # the portal admin
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, 1)) is True


def test_a_mark_lives_for_echo_ttl(r: redis.Redis, settings: Settings, keys: Keys) -> None:
    _mark(settings, *UPDATE, writer=7)
    ttl = r.pttl(keys.echo_marks("m1", "deal:5", "ONCRMDEALUPDATE", 7))
    assert settings.echo_ttl * 1000 - 10_000 < ttl <= settings.echo_ttl * 1000


def test_release_drops_the_marks_of_refused_writes(r: redis.Redis, settings: Settings) -> None:
    guard = EchoGuard(r, settings)
    echoes = _mark(settings, *UPDATE, writer=1)
    _marker_call(settings, "release", "m1", None, echoes)  # no writer: nothing to drop, no error
    _marker_call(settings, "release", "m1", 1, echoes)
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, 1)) is False
    _mark(settings, "crm.deal.update", {"id": 5}, writer=7)
    _mark(settings, "crm.deal.update", {"id": 6}, writer=7)
    _marker_call(settings, "release_calls", "m1", 7, [("crm.deal.update", {"id": 5})])  # refused in a batch
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, 7)) is False
    assert guard.consume(_event("ONCRMDEALUPDATE", 6, 7)) is True
    _marker_call(settings, "release_calls", "m1", 7, [("crm.deal.get", {"id": 6})])  # no write: nothing


def test_is_write(settings: Settings) -> None:
    marker = EchoMarker(aioredis.Redis(), settings)
    assert marker.is_write("crm.deal.update") and not marker.is_write("crm.deal.get")


def test_what_the_guards_log(r: redis.Redis, settings: Settings, raw_log: RawLog) -> None:
    guard = EchoGuard(r, settings)
    _mark(settings, *UPDATE, writer=7)
    assert guard.consume(_event("ONCRMDEALUPDATE", 5, 7)) is True
    breaker = LoopBreaker(r, settings.model_copy(update={"loop_bound": 1, "loop_window": 2000}))
    _mark(settings, *UPDATE, writer=7)
    with pytest.raises(LoopCut) as cut:
        for _ in range(3):
            breaker.check(_event("ONCRMDEALUPDATE", 5, 0))
    assert str(cut.value) == "loop cut: more than 1 write-echo-write cycles on deal:5 within 2000s"
    records = {rec.getMessage(): rec for rec in raw_log.records if rec.name == "b24pipe.guards"}
    suppressed, looped = records["echo suppressed"], records["loop cut"]
    assert suppressed.levelno == logging.DEBUG and looped.levelno == logging.WARNING
    assert suppressed.fields == {"member_id": "m1", "event_name": "ONCRMDEALUPDATE", "entity": "deal:5"}  # type: ignore[attr-defined]
    assert type(looped.fields["window"]) is int  # type: ignore[attr-defined]  # seconds, as configured
    assert looped.fields == {  # type: ignore[attr-defined]
        "member_id": "m1",
        "event_name": "ONCRMDEALUPDATE",
        "entity": "deal:5",
        "bound": 1,
        "window": 2000,
    }
