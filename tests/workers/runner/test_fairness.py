"""Fairness across portals, with real worker processes: portal A has 10,000 queued events
whose handler makes a REST call under A's 2/s limit; portal B's events, arriving meanwhile,
wait about as long as they do without A's storm (p95 within 2x)."""

from __future__ import annotations

import time

import redis

from b24pipe.testing.workers import (
    enqueue,
    enqueue_many,
    event_dict,
    start_worker,
    stop,
    text,
    wait_for,
    worker_env,
)
from shared.keys import Keys
from workers.runner.metrics import parse_rq_time

B_EVENTS = 10
B_SPACING = 0.6  # B stays well under its own 2/s limit


def _b_waits(r: redis.Redis, keys: Keys, env: dict[str, str], member: str) -> list[float]:
    supervisor = start_worker(env, "--concurrency", "2")
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 2, timeout=30)
        ids = []
        for _ in range(B_EVENTS):
            ids.append(enqueue(r, keys, "ONTESTFAIR", member_id=member))
            time.sleep(B_SPACING)
        assert wait_for(lambda: r.llen(f"{keys.ns}:test:fair:{member}") == B_EVENTS, timeout=60)
    finally:
        assert stop(supervisor) == 0
    waits = []
    for job_id in ids:
        enqueued, started = r.hmget(f"rq:job:{job_id}", "enqueued_at", "started_at")
        assert enqueued and started
        waits.append(parse_rq_time(text(started)) - parse_rq_time(text(enqueued)))
    return sorted(waits)


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.95))]


def test_a_portal_in_a_storm_does_not_hold_the_workers(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    env = worker_env(base_env, B24PIPE_HANDLERS="tests.support.fairness_handlers")
    baseline = _b_waits(r, keys, env, "member-b-alone")

    storm = [event_dict("ONTESTFAIR", "member-a") for _ in range(10_000)]
    for start in range(0, len(storm), 1000):
        enqueue_many(r, keys, storm[start : start + 1000])
    with_storm = _b_waits(r, keys, env, "member-b")

    a_done = r.llen(f"{ns}:test:fair:member-a")
    assert a_done < 200  # A really was held to its limit the whole time
    # A's events are not lost: they wait in RQ's scheduled registry, spread at A's rate
    waiting = r.zcard(f"rq:scheduled:{keys.events_queue}") + r.llen(f"rq:queue:{keys.events_queue}")
    assert waiting + a_done == 10_000
    # Sub-millisecond baselines are scheduling noise on a shared 2-core machine: the ratio is
    # taken against at least 250 ms. Without fairness B would wait behind A's 10,000 queued
    # events, tens of seconds at A's 2/s, so the bound still tells the two apart by far.
    floor = 0.25
    print(
        f"B p95 queue wait: alone {_p95(baseline) * 1000:.1f} ms, during A's storm {_p95(with_storm) * 1000:.1f} ms"
    )
    assert _p95(with_storm) <= 2 * max(_p95(baseline), floor)
