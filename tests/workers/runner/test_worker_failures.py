"""Failures with real worker processes: per-(event, handler) retries with backoff, Retry and
Permanent honoured, rate-limit deferrals use no attempt, the failed registry keeps scrubbed
texts for B24PIPE_FAILED_TTL, and a portal that needs re-authorization is parked."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import cast

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry

from b24pipe.testing.workers import enqueue, seen, start_worker, stop, wait_for, worker_env
from shared import portalstore as store
from shared.keys import Keys


@pytest.fixture
def worker(r: redis.Redis, keys: Keys, base_env: dict[str, str]) -> Iterator[None]:
    process = start_worker(worker_env(base_env, B24PIPE_MAX_ATTEMPTS="3", B24PIPE_FAILED_TTL="7200"))
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 1)
        yield
    finally:
        assert stop(process) == 0


def _finished(r: redis.Redis, keys: Keys) -> set[str]:
    return set(FinishedJobRegistry(queue=Queue(keys.events_queue, connection=r)).get_job_ids())


def _failed(r: redis.Redis, keys: Keys) -> set[str]:
    return set(FailedJobRegistry(queue=Queue(keys.events_queue, connection=r)).get_job_ids())


@pytest.mark.usefixtures("worker")
def test_a_flaky_handler_is_retried_with_its_attempt_number(r: redis.Redis, keys: Keys, ns: str) -> None:
    job_id = enqueue(r, keys, "ONTESTFLAKY", fail=2)
    assert wait_for(lambda: job_id in _finished(r, keys), timeout=30)
    assert [row[1] for row in seen(r, ns, "flaky")] == [1, 2, 3]


@pytest.mark.usefixtures("worker")
def test_attempts_run_out_into_the_failed_registry_with_configured_retention(
    r: redis.Redis, keys: Keys, ns: str
) -> None:
    job_id = enqueue(r, keys, "ONTESTFLAKY", fail=10)
    assert wait_for(lambda: job_id in _failed(r, keys), timeout=30)
    assert [row[1] for row in seen(r, ns, "flaky")] == [1, 2, 3]
    job = Job.fetch(job_id, connection=r)
    assert job.get_status() == JobStatus.FAILED
    ttl = r.ttl(job.key)
    assert 7000 < ttl <= 7200  # B24PIPE_FAILED_TTL, not RQ's year
    score = r.zscore(f"rq:failed:{keys.events_queue}", job_id)  # the registry entry's expiry
    assert score is not None and time.time() + 7000 < score <= time.time() + 7200
    assert not r.exists(keys.handler_attempts(job.args[0]["id"]))


@pytest.mark.usefixtures("worker")
def test_a_job_over_its_timeout_is_stopped_and_the_next_job_runs(r: redis.Redis, keys: Keys, ns: str) -> None:
    slow = Queue(keys.events_queue, connection=r).enqueue("time.sleep", 60, job_timeout=1)
    assert wait_for(lambda: slow.id in _failed(r, keys), timeout=30)  # 3 attempts, 1 s each
    stored = zlib.decompress(cast(bytes, r.hget(f"rq:job:{slow.id}", "exc_info"))).decode()
    assert "JobTimeoutException: Task exceeded maximum timeout value (1 seconds)" in stored
    after = enqueue(r, keys, "ONTESTRECORD")
    assert wait_for(lambda: after in _finished(r, keys), timeout=30)
    assert len(seen(r, ns, "record")) == 1


@pytest.mark.usefixtures("worker")
def test_retries_are_per_handler(r: redis.Redis, keys: Keys, ns: str) -> None:
    job_id = enqueue(r, keys, "ONTESTPARTIAL")
    assert wait_for(lambda: job_id in _finished(r, keys), timeout=30)
    assert [row[1] for row in seen(r, ns, "partial-ok")] == [1]  # not run again for the other's retry
    assert [row[1] for row in seen(r, ns, "partial-flaky")] == [1, 2]
    event_id = Job.fetch(job_id, connection=r).args[0]["id"]
    assert not r.exists(keys.handler_done(event_id), keys.handler_attempts(event_id))


@pytest.mark.usefixtures("worker")
def test_permanent_fails_at_once_and_the_stored_text_is_scrubbed(r: redis.Redis, keys: Keys, ns: str) -> None:
    job_id = enqueue(r, keys, "ONTESTPERM")
    assert wait_for(lambda: job_id in _failed(r, keys), timeout=30)
    assert len(seen(r, ns, "perm")) == 1
    stored = zlib.decompress(cast(bytes, r.hget(f"rq:job:{job_id}", "exc_info"))).decode()
    assert "Permanent" in stored or "refused" in stored
    assert "abcdefabcdefabcdefabcdefabcdef0123456789" not in stored


@pytest.mark.usefixtures("worker")
def test_rate_limited_handlers_are_deferred_without_using_an_attempt(
    r: redis.Redis, keys: Keys, ns: str
) -> None:
    job_id = enqueue(r, keys, "ONTESTRATE")
    assert wait_for(lambda: job_id in _finished(r, keys), timeout=30)
    assert [row[1] for row in seen(r, ns, "rate")] == [1, 1]  # ran twice, still attempt 1


@pytest.mark.usefixtures("worker")
def test_a_portal_needing_reauthorization_is_parked_until_released(
    r: redis.Redis, keys: Keys, ns: str
) -> None:
    member = "member-reauth"
    r.hset(keys.portal(member), mapping={"member_id": member, "status": "reauth"})
    job_id = enqueue(r, keys, "ONTESTREAUTH", member_id=member)
    assert wait_for(lambda: r.llen(keys.parked(member)) == 1, timeout=30)
    deferred = DeferredJobRegistry(queue=Queue(keys.events_queue, connection=r))
    assert job_id in deferred.get_job_ids()
    assert Job.fetch(job_id, connection=r).get_status() == JobStatus.DEFERRED
    assert r.sismember(keys.parked_portals, member)
    assert not wait_for(lambda: len(seen(r, ns, "reauth")) > 1, timeout=1.5)  # parked, not looping
    assert job_id not in _failed(r, keys)

    r.hset(keys.portal(member), "status", "active")
    assert store.run(r, store.release_parked(keys, member)) == 1
    assert wait_for(lambda: job_id in _finished(r, keys), timeout=30)
    assert len(seen(r, ns, "reauth")) == 2
    assert not r.exists(keys.parked(member))
    assert job_id not in deferred.get_job_ids()


@pytest.mark.usefixtures("worker")
def test_retry_after_goes_through_rqs_scheduled_registry(r: redis.Redis, keys: Keys, ns: str) -> None:
    job_id = enqueue(r, keys, "ONTESTPARTIAL")
    scheduled = f"rq:scheduled:{keys.events_queue}"
    assert wait_for(
        lambda: r.zscore(scheduled, job_id) is not None or job_id in _finished(r, keys), timeout=30
    )
    assert wait_for(lambda: job_id in _finished(r, keys), timeout=30)
    assert r.zscore(scheduled, job_id) is None
