"""Crash safety with real processes: SIGKILL mid-job loses nothing (the job runs again on
another worker, within the recovery time), SIGTERM finishes the current job and exits, and
a multi-worker run of a few thousand jobs runs each exactly once."""

from __future__ import annotations

import signal
import time

import redis
from rq import Queue
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from b24pipe.testing.workers import (
    enqueue,
    enqueue_many,
    event_dict,
    seen,
    start_worker,
    stop,
    text,
    wait_for,
    worker_env,
)
from shared.keys import Keys


def test_sigkill_mid_job_runs_the_job_again_on_another_worker(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    env = worker_env(base_env, B24PIPE_RECOVERY_AFTER="3")
    victim = start_worker(env)
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 1)
        job_id = enqueue(r, keys, "ONTESTSLOW", sleep=30)
        assert wait_for(lambda: r.llen(f"{ns}:test:slow-started") == 1)
        started = StartedJobRegistry(queue=Queue(keys.events_queue, connection=r))
        assert started.get_job_ids() == [job_id]  # visible as running to RQ tools
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        victim_name = text(r.hkeys(keys.workers)[0])
        rescuer = start_worker(env)
        try:
            assert wait_for(lambda: r.llen(f"{ns}:test:slow-started") == 2, timeout=20)
            rerun_after = time.monotonic() - killed_at
            runs = [text(row).split("|")[1] for row in r.lrange(f"{ns}:test:slow-started", 0, -1)]
            assert runs[0] == str(victim.pid) and runs[1] == str(rescuer.pid)
            # bounded by the configured recovery time (3 s here), not RQ's 10-minute sweep;
            # the slack covers process start-up on a loaded machine
            assert rerun_after < 3 + 5
            assert not r.exists(keys.inflight(victim_name))
            assert not r.hexists(keys.workers, victim_name)
            assert not r.exists(f"rq:worker:{victim_name}")
        finally:
            rescuer.kill()
            rescuer.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_sigterm_finishes_the_current_job_then_exits(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    worker = start_worker(worker_env(base_env))
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 1)
        slow_id = enqueue(r, keys, "ONTESTSLOW", sleep=1.5)
        waiting = [enqueue(r, keys, "ONTESTRECORD") for _ in range(3)]
        assert wait_for(lambda: r.llen(f"{ns}:test:slow-started") == 1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        stop(worker)
    queue = Queue(keys.events_queue, connection=r)
    assert len(seen(r, ns, "slow")) == 1  # the current job ran to its end
    assert slow_id in FinishedJobRegistry(queue=queue).get_job_ids()
    # jobs taken with it but not started went back to the queue, in order
    assert set(waiting) - set(FinishedJobRegistry(queue=queue).get_job_ids()) <= set(queue.get_job_ids())
    assert len(set(queue.get_job_ids()) | {row[0] for row in seen(r, ns, "record")}) >= 3
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
    assert r.hlen(keys.workers) == 0


def test_several_workers_run_thousands_of_jobs_exactly_once(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    events = [event_dict("ONTESTRECORD") for _ in range(3000)]
    enqueue_many(r, keys, events)
    supervisor = start_worker(worker_env(base_env), "--concurrency", "3")
    try:
        assert wait_for(lambda: r.llen(f"{ns}:test:record") >= 3000, timeout=120)
        queue = Queue(keys.events_queue, connection=r)
        # every job finished and nothing is left to run: an extra run could only have come before
        assert wait_for(
            lambda: (
                len(FinishedJobRegistry(queue=queue)) == 3000
                and len(queue) == 0
                and not StartedJobRegistry(queue=queue).get_job_ids()
            ),
            timeout=60,
        )
    finally:
        assert stop(supervisor) == 0
    rows = seen(r, ns, "record")
    ran = [row[0] for row in rows]
    assert len(ran) == 3000 and set(ran) == {event["id"] for event in events}
    assert len({row[2] for row in rows}) > 1  # really several processes
    queue = Queue(keys.events_queue, connection=r)
    assert len(FinishedJobRegistry(queue=queue)) == 3000
    assert len(queue) == 0 and StartedJobRegistry(queue=queue).get_job_ids() == []
