"""Queued events are real RQ jobs, written by enqueue.lua, as RQ itself would write them."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from rq import Queue
from rq.job import Job

from shared import lua
from shared.events import Event
from shared.jobs import (
    ENQUEUE,
    FUNC_NAME,
    JOB_FIELDS,
    JobTemplate,
    QueuedJob,
    enqueue_event,
    job_values,
    queue_for,
    script_call,
)
from shared.keys import Keys
from shared.settings import Settings


def _event(name: str = "ONCRMDEALUPDATE", entity: str = "759") -> Event:
    return Event(id=f"id-{name}-{entity}", name=name, member_id="m1", data={"FIELDS": {"ID": entity}}, ts=1)


def test_job_hash_has_every_field_rq_writes(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    event = _event()
    now = datetime.now(UTC)
    template = JobTemplate.build(keys.events_queue, settings)
    shared = template.shared(now)
    ours = dict(zip(shared[::2], shared[1::2], strict=True))
    ours.update(zip(JOB_FIELDS, job_values(event.model_dump(mode="json")), strict=True))

    queue = Queue(keys.events_queue, connection=r)
    reference = queue.create_job(
        FUNC_NAME,
        args=(event.model_dump(mode="json"),),
        timeout=settings.job_timeout,
        failure_ttl=settings.failed_ttl,
        description=str(ours["description"]),
    )
    reference.origin = queue.name
    reference.enqueued_at = now
    reference.created_at = now
    expected = reference.to_dict()
    assert ours.pop("b24_member") == event.member_id  # ours, for fetch.lua's fairness
    assert set(ours) == set(expected)
    for name, value in expected.items():
        if name != "data":
            assert str(ours[name]) == str(getattr(value, "value", value)), name  # enums go in as values
    assert isinstance(ours["data"], bytes)


def test_enqueued_event_is_a_real_rq_job(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    event = _event()
    assert enqueue_event(r, keys, settings, event, keys.events_queue) is True
    assert enqueue_event(r, keys, settings, event, keys.events_queue) is False  # duplicate in the window

    queue = Queue(keys.events_queue, connection=r)
    assert queue.count == 1
    assert any(q.name == keys.events_queue for q in Queue.all(connection=r))
    job = Job.fetch(queue.job_ids[0], connection=r)
    assert job.func_name == FUNC_NAME
    assert job.args == (event.model_dump(mode="json"),)
    assert job.get_status() == "queued"
    assert job.origin == keys.events_queue
    assert job.timeout == settings.job_timeout
    assert job.failure_ttl == settings.failed_ttl
    assert r.ttl(keys.dedupe(event.id)) > 0
    r.delete(f"rq:job:{job.id}", f"rq:queue:{keys.events_queue}")
    r.srem("rq:queues", f"rq:queue:{keys.events_queue}")


def test_one_script_call_writes_a_whole_batch(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    """Fresh events become jobs in order; a recent duplicate, and a repeat inside the batch
    itself, are answered "0" and write nothing."""
    seen_before = _event(entity="1")
    assert enqueue_event(r, keys, settings, seen_before, keys.events_queue) is True
    events = [_event(entity="2"), seen_before, _event(entity="3"), _event(entity="2")]
    jobs = [QueuedJob.of(keys, event.model_dump(mode="json")) for event in events]
    script_keys, argv = script_call(JobTemplate.build(keys.events_queue, settings), jobs)
    flags = r.eval(lua.source(ENQUEUE), len(script_keys), *script_keys, *argv)
    assert flags == b"1010"

    queue = Queue(keys.events_queue, connection=r)
    assert queue.job_ids[1:] == [jobs[0].job_id, jobs[2].job_id]
    for job, event in ((jobs[0], events[0]), (jobs[2], events[2])):
        fetched = Job.fetch(job.job_id, connection=r)
        assert fetched.args == (event.model_dump(mode="json"),)
        assert fetched.get_status() == "queued"
        assert r.hget(f"rq:job:{job.job_id}", "b24_member") == b"m1"
    for skipped in (jobs[1], jobs[3]):
        assert not r.exists(f"rq:job:{skipped.job_id}")
    for job_id in queue.job_ids:
        r.delete(f"rq:job:{job_id}")
    r.delete(f"rq:queue:{keys.events_queue}")
    r.srem("rq:queues", f"rq:queue:{keys.events_queue}")


def test_lifecycle_events_go_to_the_lifecycle_queue(keys: Keys) -> None:
    assert queue_for(keys, _event("ONAPPUNINSTALL")) == keys.lifecycle_queue
    assert queue_for(keys, _event("ONCRMDEALADD")) == keys.events_queue
