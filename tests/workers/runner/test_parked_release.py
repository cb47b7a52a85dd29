"""Saving a portal record releases its parked jobs in the same transaction, only when the
record is active; restoring a portal that needed re-authorization is a security-log event."""

from __future__ import annotations

import logging

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry

from shared import portalstore as store
from shared.keys import Keys
from shared.portals import Portal, Status


def _parked_job(r: redis.Redis, keys: Keys, member: str) -> str:
    """A job in the state ack.lua leaves a parked one: deferred, listed under its portal."""
    queue = Queue(keys.events_queue, connection=r)
    job = queue.enqueue("workers.dispatch.run_event", {"member_id": member})
    r.lrem(f"rq:queue:{keys.events_queue}", 0, job.id)
    r.hset(f"rq:job:{job.id}", "status", "deferred")
    r.zadd(f"rq:deferred:{keys.events_queue}", {job.id: 1})
    r.rpush(keys.parked(member), job.id)
    r.sadd(keys.parked_portals, member)
    return str(job.id)


def _security(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.name == "b24pipe.security"]


def test_saving_a_reauth_record_keeps_jobs_parked_and_an_active_one_releases_them(
    r: redis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    member = "m-parked"
    portal = Portal(member_id=member, domain="p.example", status=Status.REAUTH)
    assert store.run(r, store.save_portal(keys, portal)).released == 0
    job_id = _parked_job(r, keys, member)

    still = store.run(r, store.save_portal(keys, portal))
    assert still.released == 0 and r.llen(keys.parked(member)) == 1

    portal.status = Status.ACTIVE
    with caplog.at_level(logging.WARNING, logger="b24pipe.security"):
        saved = store.run(r, store.save_portal(keys, portal))
    assert (saved.previous, saved.status, saved.released) == ("reauth", "active", 1)
    assert r.lrange(f"rq:queue:{keys.events_queue}", 0, -1) == [job_id.encode()]
    assert Job.fetch(job_id, connection=r).get_status() == JobStatus.QUEUED
    assert job_id not in DeferredJobRegistry(queue=Queue(keys.events_queue, connection=r)).get_job_ids()
    assert not r.exists(keys.parked(member)) and not r.sismember(keys.parked_portals, member)
    assert _security(caplog) == ["reauthorized"]

    # Saving an active record again is no re-authorization and releases nothing twice.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="b24pipe.security"):
        again = store.run(r, store.save_portal(keys, portal))
    assert again.released == 0 and _security(caplog) == []
    assert r.llen(f"rq:queue:{keys.events_queue}") == 1
