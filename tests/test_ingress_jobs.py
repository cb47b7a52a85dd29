"""Queued events are real RQ jobs, written by enqueue.lua, as RQ itself would write them."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from rq import Queue
from rq.job import Job

from shared.events import Event
from shared.jobs import FUNC_NAME, JobTemplate, enqueue_event, job_fields, queue_for
from shared.keys import Keys
from shared.settings import Settings


def _event(name: str = "ONCRMDEALUPDATE", entity: str = "759") -> Event:
    return Event(id=f"id-{name}-{entity}", name=name, member_id="m1", data={"FIELDS": {"ID": entity}}, ts=1)


def test_job_hash_has_every_field_rq_writes(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    event = _event()
    now = datetime.now(UTC)
    template = JobTemplate.build(keys.events_queue, settings)
    ours = dict(zip(template.static[::2], template.static[1::2], strict=True))
    fields = job_fields(event, now)
    ours.update(zip(fields[::2], fields[1::2], strict=True))

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


def test_lifecycle_events_go_to_the_lifecycle_queue(keys: Keys) -> None:
    assert queue_for(keys, _event("ONAPPUNINSTALL")) == keys.lifecycle_queue
    assert queue_for(keys, _event("ONCRMDEALADD")) == keys.events_queue
