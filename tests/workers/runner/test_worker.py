"""The b24pipe worker with real processes and real Redis: handlers run once each, RQ's
registries stay right, lifecycle first, any RQ job function runs."""

from __future__ import annotations

import pytest
import redis
from prometheus_client import generate_latest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from b24pipe.testing.workers import enqueue, seen, start_worker, stop, text, wait_for, worker_env
from shared.keys import Keys
from workers.guards.loop import ECHO_SUPPRESSED, LOOP_CUT
from workers.rest import metrics as restmetrics
from workers.runner.metrics import WorkerMetrics, exposition


def test_burst_worker_runs_each_handler_once_and_keeps_rq_registries(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    ids = [enqueue(r, keys, "ONTESTRECORD") for _ in range(50)]
    async_id = enqueue(r, keys, "ONTESTASYNC")
    catch_all_id = enqueue(r, keys, "ONTESTCATCHALL")
    unhandled_id = enqueue(r, keys, "ONSOMETHINGNOBODYHANDLES")
    plain = Queue(keys.events_queue, connection=r).enqueue(
        "tests.support.worker_handlers.plain_job", f"{ns}:test:plain"
    )

    worker = start_worker(worker_env(base_env), "--burst")
    assert worker.wait(60) == 0, worker.stderr.read() if worker.stderr else ""

    assert len(seen(r, ns, "record")) == 50
    assert {row[1] for row in seen(r, ns, "record")} == {1}
    assert len(seen(r, ns, "async")) == 1
    assert len(seen(r, ns, "catch-all")) == 1
    assert r.lrange(f"{ns}:test:plain", 0, -1) == [b"ran"]

    queue = Queue(keys.events_queue, connection=r)
    finished = set(FinishedJobRegistry(queue=queue).get_job_ids())
    assert {*ids, async_id, catch_all_id, unhandled_id, plain.id} <= finished
    assert len(queue) == 0
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
    for job_id in (ids[0], unhandled_id, plain.id):
        job = Job.fetch(job_id, connection=r)
        assert job.get_status() == JobStatus.FINISHED
        assert job.started_at is not None and job.ended_at is not None
        assert r.ttl(job.key) > 0  # kept for RQ's result ttl, then gone
    assert not r.exists(keys.workers) or r.hlen(keys.workers) == 0  # deregistered on exit
    assert not any(text(key).startswith(f"{ns}:inflight:") for key in r.keys(f"{ns}:*"))


@pytest.mark.parametrize("kept", ["", "workers/lua/fetch.lua"])
def test_a_redis_that_forgot_the_scripts_costs_no_job(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str], kept: str
) -> None:
    """Redis forgets the worker's scripts mid-run (a restart, SCRIPT FLUSH) while a batch's
    acknowledgements and the next fetch are on their way in one round trip; with fetch.lua
    alone loaded again, that fetch runs before the acknowledgements. Each event still runs
    once and every job ends finished."""
    ids = [enqueue(r, keys, "ONTESTRECORD") for _ in range(3)]
    forget = Queue(keys.events_queue, connection=r).enqueue(
        "tests.support.worker_handlers.forget_scripts", kept
    )
    ids += [enqueue(r, keys, "ONTESTRECORD") for _ in range(10)]

    worker = start_worker(worker_env(base_env, B24PIPE_FETCH_BATCH="4"), "--burst")  # the 4th job forgets
    assert worker.wait(60) == 0, worker.stderr.read() if worker.stderr else ""

    runs = seen(r, ns, "record")
    assert len(runs) == len({row[0] for row in runs}) == 13
    queue = Queue(keys.events_queue, connection=r)
    assert {*ids, forget.id} <= set(FinishedJobRegistry(queue=queue).get_job_ids())
    assert len(queue) == 0 and StartedJobRegistry(queue=queue).get_job_ids() == []


def test_lifecycle_queue_is_served_first(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    for _ in range(20):
        enqueue(r, keys, "ONTESTRECORD", marker="event")
    lifecycle_id = enqueue(r, keys, "ONTESTRECORD", lifecycle=True, marker="lifecycle")
    worker = start_worker(worker_env(base_env, B24PIPE_FETCH_BATCH="1"), "--burst")
    assert worker.wait(60) == 0
    first_event_id = seen(r, ns, "record")[0][0]
    job = Job.fetch(lifecycle_id, connection=r)
    assert job.args[0]["id"] == first_event_id


def test_worker_waits_for_new_jobs_and_stops_on_sigterm(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    worker = start_worker(worker_env(base_env))
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 1)
        name = text(r.hkeys(keys.workers)[0])
        assert r.exists(f"rq:worker:{name}")  # visible to rq info
        enqueue(r, keys, "ONTESTRECORD")
        assert wait_for(lambda: len(seen(r, ns, "record")) == 1)
    finally:
        assert stop(worker) == 0
    assert r.hlen(keys.workers) == 0


def test_worker_refuses_to_start_without_token_keys_or_with_bad_handlers(base_env: dict[str, str]) -> None:
    no_keys = start_worker(worker_env({**base_env, "B24PIPE_TOKEN_KEYS": ""}), "--burst")
    assert no_keys.wait(30) == 2
    bad = start_worker(worker_env(base_env, B24PIPE_HANDLERS="tests.no_such_module"), "--burst")
    assert bad.wait(30) == 2
    message = bad.stderr.read().decode() if bad.stderr else ""
    assert "tests.no_such_module" in message and "Traceback" not in message
    assert len(message.strip().splitlines()) == 1


def test_worker_metrics_expose_rest_guard_and_queue_figures(r: redis.Redis, keys: Keys) -> None:
    metrics = WorkerMetrics()
    metrics.jobs.labels("ONCRMDEALUPDATE", "ok").inc()
    restmetrics.CALLS.labels("crm.deal.get", "200").inc()
    enqueue(r, keys, "ONCRMDEALUPDATE")
    text = generate_latest(exposition(metrics, r, keys, 60)).decode()
    assert 'b24pipe_worker_jobs_total{event="ONCRMDEALUPDATE",outcome="ok"} 1.0' in text
    assert 'b24pipe_rest_calls_total{method="crm.deal.get",status="200"}' in text  # process-wide
    assert all(metric.name in text for c in (ECHO_SUPPRESSED, LOOP_CUT) for metric in c.describe())  # guards
    assert f'b24pipe_queue_depth{{queue="{keys.events_queue}"}} 1.0' in text


def test_a_taken_event_is_no_longer_a_duplicate_for_the_ingress(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    """The ingress drops a delivery identical to one already queued; once a worker has taken
    the event, an identical delivery is a new change in the same second and must be queued."""
    job_id = enqueue(r, keys, "ONTESTRECORD")
    event_id = str(Job.fetch(job_id, connection=r).args[0]["id"])
    r.set(keys.dedupe(event_id), job_id, ex=300)  # what the ingress's enqueue leaves
    r.set(keys.dedupe("still-queued-elsewhere"), "x", ex=300)
    worker = start_worker(worker_env(base_env), "--burst")
    assert worker.wait(60) == 0
    assert [row[0] for row in seen(r, ns, "record")] == [event_id]
    assert not r.exists(keys.dedupe(event_id))
    assert r.exists(keys.dedupe("still-queued-elsewhere"))
