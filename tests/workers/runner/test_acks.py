"""Each acknowledgement verb through the real `ack.lua` against a real Redis: the job leaves
the in-flight list and lands where its verb says, read back through RQ's own API where RQ
has one; an ack sent twice is applied once."""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry

import workers
from shared.keys import Keys
from shared.portals import as_text
from workers.runner.acks import (
    COLUMNS,
    Ack,
    DeferAck,
    DoneAck,
    FailAck,
    FrontAck,
    HoldAck,
    ParkAck,
    RetryAck,
    Spacing,
    Verb,
    ack_call,
    row,
    schedules,
)
from workers.runner.outcome import Action
from workers.runner.scripts import Scripts

WORKER = "acks-test.1.abc"


class Acker:
    """Takes jobs into a worker's in-flight list as fetch.lua would, and acknowledges them."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r, self.keys = r, keys
        self.queue = Queue(keys.events_queue, connection=r)
        self.script = Scripts.register(r).ack
        self.now = time.time()
        self.taken: list[str] = []

    def take(self) -> str:
        job = self.queue.enqueue("workers.dispatch.run_event", {"id": "e1"})
        self.r.lrem(f"rq:queue:{self.queue.name}", 0, job.id)
        self.r.rpush(self.keys.inflight(WORKER), job.id)
        self.taken.append(job.id)
        return str(job.id)

    def ack(self, *acks: Ack) -> None:
        keys, args = ack_call(
            acks,
            self.keys,
            worker=WORKER,
            inflight=self.keys.inflight(WORKER),
            now=self.now,
        )
        self.script(keys=keys, args=args)

    def status(self, job_id: str) -> JobStatus | None:
        return Job.fetch(job_id, connection=self.r).get_status()

    def queued(self) -> list[str]:
        return [as_text(item) for item in self.r.lrange(f"rq:queue:{self.queue.name}", 0, -1)]

    def scheduled_at(self, job_id: str) -> float | None:
        return self.r.zscore(ScheduledJobRegistry(queue=self.queue).key, job_id)

    def horizon(self, member: str) -> tuple[float, float]:
        """The portal's horizon and spacing (0 where unset)."""
        found = self.r.hmget(self.keys.defer_horizon, [member, f"{member}:s"])
        return (float(found[0] or 0), float(found[1] or 0))


@pytest.fixture
def acker(r: redis.Redis, keys: Keys) -> Iterator[Acker]:
    made = Acker(r, keys)
    yield made
    for job_id in made.taken:  # RQ's keys are not in the test's namespace
        r.delete(f"rq:job:{job_id}", f"rq:results:{job_id}", f"rq:executions:{job_id}")


def test_every_verb_is_an_action_and_front() -> None:
    assert {verb.value for verb in Verb} == {action.value for action in Action} | {"front"}


def test_ack_lua_documents_the_columns_ack_call_writes() -> None:
    lua = (Path(workers.__file__).parent / "lua" / "ack.lua").read_text()
    header = lua[lua.index("(COLUMNS in") : lua.index("\nlocal ")]
    documented = re.findall(r"[a-z_]+", header.split("):", 1)[1].replace("--", " "))
    assert tuple(documented) == COLUMNS


def test_a_row_is_its_width_then_its_columns_up_to_the_last_its_verb_uses() -> None:
    q = "q"
    assert row(DoneAck("j", q, 0)) == [4, "done", "j", q, 0]
    assert row(HoldAck("j", q, None)) == [3, "hold", "j", q]
    assert row(RetryAck("j", q, 5.0, 2)) == [6, "retry", "j", q, "", 5.0, 2]
    named = row(FailAck("j", q, 7, b"zz"))
    assert dict(zip(COLUMNS, named[1:], strict=True)) == {
        **dict.fromkeys(COLUMNS, ""),
        "verb": "fail",
        "job_id": "j",
        "queue": q,
        "ttl": 7,
        "exc_info": b"zz",
        "exc_string": b"eno=",
    }


def test_done_finishes_the_job_for_its_ttl_and_ttl_0_deletes_it(acker: Acker, r: redis.Redis) -> None:
    kept, dropped = acker.take(), acker.take()
    acker.ack(DoneAck(kept, acker.queue.name, 100), DoneAck(dropped, acker.queue.name, 0))
    assert acker.status(kept) == JobStatus.FINISHED
    assert kept in FinishedJobRegistry(queue=acker.queue).get_job_ids()
    assert 0 < r.ttl(f"rq:job:{kept}") <= 100
    assert not r.exists(f"rq:job:{dropped}")
    assert r.llen(acker.keys.inflight(WORKER)) == 0


def test_fail_keeps_the_traceback_and_rq_s_result_record(acker: Acker) -> None:
    job_id = acker.take()
    text = "Traceback: boom"
    acker.ack(FailAck(job_id, acker.queue.name, 200, zlib.compress(text.encode())))
    job = Job.fetch(job_id, connection=acker.r)
    assert (
        job.get_status() == JobStatus.FAILED and job_id in FailedJobRegistry(queue=acker.queue).get_job_ids()
    )
    assert job.exc_info == text
    result = job.latest_result()
    assert result is not None and result.exc_string == text


def test_retry_schedules_at_its_time_and_counts_the_attempt(acker: Acker, r: redis.Redis) -> None:
    counted, uncounted = acker.take(), acker.take()
    r.hset(f"rq:job:{uncounted}", "b24_attempts", 2)
    acker.ack(
        RetryAck(counted, acker.queue.name, acker.now + 30, 3),
        RetryAck(uncounted, acker.queue.name, acker.now + 40),
    )
    assert acker.status(counted) == JobStatus.SCHEDULED
    assert acker.scheduled_at(counted) == pytest.approx(acker.now + 30)
    assert acker.scheduled_at(uncounted) == pytest.approx(acker.now + 40)
    assert r.hget(f"rq:job:{counted}", "b24_attempts") == b"3"
    assert r.hget(f"rq:job:{uncounted}", "b24_attempts") == b"2"


def test_defer_spreads_a_portal_s_jobs_behind_its_horizon(acker: Acker) -> None:
    first, behind, again = acker.take(), acker.take(), acker.take()
    acker.ack(DeferAck(first, acker.queue.name, "m1", 5.0, Spacing.FIRST))
    assert acker.scheduled_at(first) == pytest.approx(acker.now + 5)
    assert acker.horizon("m1") == pytest.approx((acker.now + 10, 5.0))
    acker.ack(DeferAck(behind, acker.queue.name, "m1", 0, Spacing.SKIP))
    assert acker.scheduled_at(behind) == pytest.approx(acker.now + 10)
    assert acker.horizon("m1") == pytest.approx((acker.now + 15, 5.0))
    acker.ack(DeferAck(again, acker.queue.name, "m1", 2.0, Spacing.AGAIN))
    assert acker.scheduled_at(again) == pytest.approx(acker.now + 2)
    assert acker.horizon("m1") == pytest.approx((acker.now + 15, 5.0))
    assert acker.status(again) == JobStatus.SCHEDULED


def test_hold_schedules_a_leader_or_puts_it_at_the_tail(acker: Acker) -> None:
    waiting = acker.take()
    acker.r.lrem(acker.keys.inflight(WORKER), 0, waiting)
    acker.r.rpush(f"rq:queue:{acker.queue.name}", waiting)  # a burst already queued
    later, tail = acker.take(), acker.take()
    acker.ack(HoldAck(later, acker.queue.name, acker.now + 3), HoldAck(tail, acker.queue.name, None))
    assert acker.scheduled_at(later) == pytest.approx(acker.now + 3)
    assert acker.queued() == [waiting, tail] and acker.status(tail) == JobStatus.QUEUED


def test_park_waits_for_the_portal_unless_it_is_active_again(acker: Acker, r: redis.Redis) -> None:
    keys = acker.keys
    parked, released = acker.take(), acker.take()
    acker.ack(ParkAck(parked, acker.queue.name, "m2"))
    assert acker.status(parked) == JobStatus.DEFERRED
    assert parked in DeferredJobRegistry(queue=acker.queue).get_job_ids()
    assert r.lrange(keys.parked("m2"), 0, -1) == [parked.encode()] and r.sismember(keys.parked_portals, "m2")
    r.hset(keys.portal("m3"), "status", "active")
    acker.ack(ParkAck(released, acker.queue.name, "m3"))
    assert acker.queued() == [released] and not r.exists(keys.parked("m3"))


def test_front_gives_an_unstarted_job_back_first(acker: Acker) -> None:
    queued = acker.take()
    acker.r.lrem(acker.keys.inflight(WORKER), 0, queued)
    acker.r.rpush(f"rq:queue:{acker.queue.name}", queued)
    given_back = acker.take()
    acker.ack(FrontAck(given_back, acker.queue.name))
    assert acker.queued() == [given_back, queued] and acker.status(given_back) == JobStatus.QUEUED


def test_an_ack_sent_twice_is_applied_once(acker: Acker) -> None:
    job_id = acker.take()
    ack = HoldAck(job_id, acker.queue.name, None)
    acker.ack(ack)
    acker.ack(ack)  # the same batch again, after a reply lost in an outage
    assert acker.queued() == [job_id]


def test_only_retry_defer_and_a_delayed_hold_schedule() -> None:
    q = "q"
    assert [
        schedules(ack)
        for ack in (
            DoneAck("j", q, 0),
            FailAck("j", q, 0, b""),
            RetryAck("j", q, 1.0),
            DeferAck("j", q, "m", 1.0, Spacing.FIRST),
            HoldAck("j", q, 1.0),
            HoldAck("j", q, None),
            ParkAck("j", q, "m"),
            FrontAck("j", q),
        )
    ] == [False, False, True, True, True, False, False, False]
