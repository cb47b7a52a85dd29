"""RQ's own tools see b24pipe's workers and jobs as they are, read here through RQ's API (what
`rq info` and rq-dashboard call): a failed job carries RQ's result record with the scrubbed
exception, a worker record says idle or busy, its current job and its counts, and
`rq suspend` / `rq resume` stop and restart taking jobs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import redis
from rq import Queue
from rq import Worker as RQWorker
from rq.job import Job, JobStatus
from rq.results import Result
from rq.suspension import resume, suspend

from b24pipe.testing.workers import enqueue, start_worker, stop, wait_for, worker_env
from shared.keys import Keys

SECRET = "abcdefabcdefabcdefabcdefabcdef0123456789"  # what ONTESTPERM's exception text carries


@pytest.fixture
def worker(r: redis.Redis, keys: Keys, base_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(worker_env(base_env))
    try:
        assert wait_for(lambda: len(_workers(r, keys)) == 1)
        yield process
    finally:
        resume(r)
        assert stop(process) == 0


def _workers(r: redis.Redis, keys: Keys) -> list[RQWorker]:
    """This test's workers, as `rq info` lists a queue's (the Redis is shared by other tests)."""
    return list(RQWorker.all(queue=Queue(keys.events_queue, connection=r)))


def _one(r: redis.Redis, keys: Keys) -> RQWorker:
    (found,) = _workers(r, keys)
    return found


def _status(r: redis.Redis, job_id: str) -> JobStatus | None:
    return Job.fetch(job_id, connection=r).get_status()


def test_a_failed_job_carries_rq_s_result_record_with_the_scrubbed_exception(
    r: redis.Redis, keys: Keys, worker: subprocess.Popen[bytes]
) -> None:
    job_id = enqueue(r, keys, "ONTESTPERM")
    assert wait_for(lambda: _status(r, job_id) == JobStatus.FAILED)
    result = Job.fetch(job_id, connection=r).latest_result()
    assert result is not None and result.type == Result.Type.FAILED
    assert result.exc_string and "refused with" in result.exc_string
    assert SECRET not in result.exc_string
    assert wait_for(lambda: _one(r, keys).failed_job_count == 1)
    # the log line names the job and its event as `failed list` and rq-dashboard do
    assert stop(worker) == 0
    lines = [json.loads(line) for line in (worker.stderr.read() if worker.stderr else b"").splitlines()]
    (failed,) = [line for line in lines if line.get("msg") == "job failed"]
    job = Job.fetch(job_id, connection=r)
    assert failed["job"] == job_id and failed["event_id"] == job.args[0]["id"]
    assert SECRET not in json.dumps(lines)


@pytest.mark.usefixtures("worker")
def test_the_worker_record_says_busy_with_its_job_then_idle_with_its_count(
    r: redis.Redis, keys: Keys, ns: str
) -> None:
    assert _one(r, keys).state == "idle"
    job_id = enqueue(r, keys, "ONTESTSLOW", sleep=1.5)
    assert wait_for(lambda: r.llen(f"{ns}:test:slow-started") == 1)  # the handler is running
    busy = _one(r, keys)
    assert busy.state == "busy"
    assert busy.get_current_job_id() == job_id
    assert wait_for(lambda: _status(r, job_id) == JobStatus.FINISHED)
    assert wait_for(lambda: _one(r, keys).state == "idle")
    idle = _one(r, keys)
    assert idle.successful_job_count == 1 and idle.failed_job_count == 0
    assert idle.get_current_job_id() is None


@pytest.mark.usefixtures("worker")
def test_rq_suspend_holds_every_job_until_rq_resume(r: redis.Redis, keys: Keys) -> None:
    suspend(r)
    assert wait_for(lambda: _one(r, keys).state == "suspended")
    job_ids = [enqueue(r, keys, "ONTESTRECORD") for _ in range(3)]
    # several fetch rounds later (the worker's heartbeat moves on), nothing was taken
    beats: set[object] = set()

    def beaten() -> bool:
        beats.add(_one(r, keys).last_heartbeat)
        return len(beats) >= 4

    assert wait_for(beaten)
    assert all(_status(r, job_id) == JobStatus.QUEUED for job_id in job_ids)
    assert r.llen(f"rq:queue:{keys.events_queue}") == 3
    resume(r)
    assert wait_for(lambda: all(_status(r, job_id) == JobStatus.FINISHED for job_id in job_ids))
    assert wait_for(lambda: _one(r, keys).successful_job_count == 3)
