"""`b24pipe portals pause M` / `resume M` with a real worker: the paused portal's events are
accepted and kept but not processed while other portals' run; on resume they all run once,
in the order they came, before the portal's newer events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry

from b24pipe.testing.ingress import FORM, OK, body, queued, seed_portal, serve
from b24pipe.testing.workers import ROOT, event_dict, seen, start_worker, stop, wait_for, worker_env
from shared import pausing
from shared.keys import Keys
from shared.settings import Settings


def _portals(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b24pipe", "portals", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def env(r: redis.Redis, keys: Keys, base_env: dict[str, str]) -> Iterator[dict[str, str]]:
    for member in ("member-a", "member-b"):
        seed_portal(r, keys, member, f"token-{member}")
    env = worker_env(base_env)
    process = start_worker(env)
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 1)
        yield env
    finally:
        assert stop(process) == 0


def _enqueue(r: redis.Redis, keys: Keys, member_id: str, **data: Any) -> str:
    """One event job with its portal named, written in one transaction as the ingress does
    (a worker blocked on the queue must never see the job without `b24_member`)."""
    queue = Queue(keys.events_queue, connection=r)
    with r.pipeline() as pipe:
        job = queue.enqueue(
            "workers.dispatch.run_event", event_dict("ONTESTRECORD", member_id, **data), pipeline=pipe
        )
        pipe.hset(f"rq:job:{job.id}", "b24_member", member_id)
        pipe.execute()
    return str(job.id)


def _status(r: redis.Redis, job_id: str) -> JobStatus | None:
    return Job.fetch(job_id, connection=r).get_status()


def test_a_paused_portal_is_held_then_resumed_in_order(
    r: redis.Redis, keys: Keys, ns: str, env: dict[str, str]
) -> None:
    paused = _portals(env, "pause", "member-a")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "portal member-a paused"

    held = [_enqueue(r, keys, "member-a", n=n) for n in range(5)]
    other = _enqueue(r, keys, "member-b")
    assert wait_for(lambda: _status(r, other) == JobStatus.FINISHED)  # other portals run
    deferred = DeferredJobRegistry(queue=Queue(keys.events_queue, connection=r))
    assert wait_for(lambda: set(deferred.get_job_ids()) == set(held))
    assert all(_status(r, job_id) == JobStatus.DEFERRED for job_id in held)
    event_ids = [str(Job.fetch(job_id, connection=r).args[0]["id"]) for job_id in held]
    assert [row[0] for row in seen(r, ns, "record")] == [Job.fetch(other, connection=r).args[0]["id"]]

    resumed = _portals(env, "resume", "member-a")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "portal member-a resumed: 5 held job(s) back in their queue"
    newer = _enqueue(r, keys, "member-a", n=5)
    assert wait_for(lambda: _status(r, newer) == JobStatus.FINISHED)
    assert wait_for(lambda: all(_status(r, job_id) == JobStatus.FINISHED for job_id in held))
    order = [row[0] for row in seen(r, ns, "record")][1:]
    assert order == [*event_ids, str(Job.fetch(newer, connection=r).args[0]["id"])]  # once each, in order
    assert deferred.get_job_ids() == []


def test_pausing_an_unknown_portal_fails_with_one_line(env: dict[str, str]) -> None:
    done = _portals(env, "pause", "member-zzz")
    assert done.returncode == 1
    assert done.stderr.strip().endswith("unknown portal member-zzz")


def test_the_ingress_keeps_accepting_a_paused_portal_s_events(
    r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    seed_portal(r, keys, "member-a", "token-a")
    assert pausing.pause(r, keys, "member-a")

    async def deliver() -> tuple[int, object]:
        async with serve(settings) as client:
            answer = await client.post("/b24/events", data=body("member-a", "token-a"), headers=FORM)
            return answer.status, await answer.json()

    assert asyncio.run(deliver()) == (200, OK)
    assert len(queued(r, keys.events_queue)) == 1
