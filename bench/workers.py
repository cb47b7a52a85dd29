"""`make bench-workers`: b24pipe's worker against plain RQ SimpleWorker, same run.

Both sides drain a queue pre-loaded with the same N no-op events (one RQ job per event,
function workers.dispatch.run_event, a registered no-op handler), in alternating rounds,
in this process. Printed: events/s for each side (best round), their ratio, lost and
duplicated events (both must be 0), and the p50 and p99 queue wait (enqueue to start: the
job's `enqueued_at` to its `started_at`, when a worker took it) of a `b24pipe worker`
process fed at half of the median measured maximum rate, the way the ingress queues
events (one enqueue.lua call every 10 ms).

Environment: BENCH_N (events per round, default 5000), BENCH_ROUNDS (default 3),
BENCH_SECONDS (length of the half-rate run, default 6), REDIS_URL (else a local server).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from rq import Queue, SimpleWorker

from b24pipe.redisserver import start_server
from bench import noop
from bench.knobs import knob
from bench.verdict import verdict
from shared import lua, rqkeys
from shared.crypto import generate_key
from shared.events import Event
from shared.jobs import ENQUEUE, JobTemplate, QueuedJob, script_call
from shared.keys import Keys
from shared.settings import load_settings
from workers.runner import context
from workers.runner.metrics import parse_rq_time
from workers.runner.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def _events(n: int) -> list[dict[str, Any]]:
    now = int(time.time())
    return [
        Event(
            id=uuid.uuid4().hex, name="ONBENCHNOOP", member_id="bench", domain="bench.test", ts=now
        ).model_dump(mode="json")
        for _ in range(n)
    ]


def _preload(client: redis.Redis, queue_name: str, events: list[dict[str, Any]]) -> None:
    queue = Queue(queue_name, connection=client)
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        queue.enqueue_many([Queue.prepare_data("workers.dispatch.run_event", args=(e,)) for e in chunk])


def _check(events: list[dict[str, Any]]) -> tuple[int, int]:
    lost = sum(1 for e in events if noop.SEEN[e["id"]] == 0)
    dup = sum(count - 1 for count in noop.SEEN.values() if count > 1)
    return lost, dup


def _round_rq(client: redis.Redis, events: list[dict[str, Any]]) -> tuple[float, int, int]:
    ns = f"benchrq{uuid.uuid4().hex[:6]}"
    keys = Keys(ns)
    _preload(client, keys.events_queue, events)
    settings = load_settings(namespace=ns)
    context.install(context.JobContext(client, keys, settings, runs=1))
    noop.SEEN.clear()
    started = time.perf_counter()
    SimpleWorker([Queue(keys.events_queue, connection=client)], connection=client).work(
        burst=True, logging_level="WARNING"
    )
    elapsed = time.perf_counter() - started
    return len(events) / elapsed, *_check(events)


def _round_b24(client: redis.Redis, events: list[dict[str, Any]]) -> tuple[float, int, int]:
    ns = f"benchb24{uuid.uuid4().hex[:6]}"
    keys = Keys(ns)
    _preload(client, keys.events_queue, events)
    noop.SEEN.clear()
    worker = Worker(load_settings(namespace=ns), client, burst=True)
    started = time.perf_counter()
    worker.work()
    elapsed = time.perf_counter() - started
    return len(events) / elapsed, *_check(events)


def _half_rate_waits(url: str, rate: float, seconds: float) -> list[float]:
    """The enqueue-to-start waits, sorted, of a worker process fed at `rate` events/s."""
    ns = f"benchwait{uuid.uuid4().hex[:6]}"
    keys = Keys(ns)
    client = redis.Redis.from_url(url)
    env = {
        **os.environ,
        "REDIS_URL": url,
        "B24PIPE_NAMESPACE": ns,
        "B24PIPE_HANDLERS": "bench.noop",
        "PYTHONPATH": str(ROOT),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "b24pipe", "worker"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    queue = Queue(keys.events_queue, connection=client)
    # Fed the way the ingress queues events (shared/jobs.py, one enqueue.lua call per tick):
    # the batch's enqueued_at is stamped just before the call, so the wait measured is the
    # worker's, not the time a client spends building the rest of its batch (RQ's
    # enqueue_many stamps each job before it has even sent the first).
    template = JobTemplate.build(keys.events_queue, load_settings(namespace=ns))
    enqueue = lua.script(client, ENQUEUE)
    ids: list[str] = []
    try:
        while not client.hlen(keys.workers):
            time.sleep(0.05)
        tick = 0.01
        started = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                jobs = [QueuedJob.of(keys, event) for event in _events(due)]
                script_keys, argv = script_call(template, jobs)
                enqueue(keys=script_keys, args=argv)
                ids.extend(job.job_id for job in jobs)
                sent += due
            time.sleep(tick)
        while len(queue) or client.zcard(rqkeys.started(keys.events_queue)):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        worker.terminate()
        worker.wait(20)
    waits = []
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(rqkeys.job(job_id), "enqueued_at", "started_at")
        for enqueued, begun in pipe.execute():
            if enqueued and begun:
                waits.append(parse_rq_time(begun.decode()) - parse_rq_time(enqueued.decode()))
    return sorted(waits)


def percentile(ordered: list[float], share: float) -> float:
    """The value below which `share` of the sorted values lie (nan when there are none)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("rq").setLevel(logging.ERROR)
    # A worker always runs with a token key (`b24pipe worker` refuses to start without one):
    # handlers get their REST client built from it, even the no-op that never calls it.
    os.environ.setdefault("B24PIPE_TOKEN_KEYS", generate_key())
    n = knob("BENCH_N", 5000)
    rounds = knob("BENCH_ROUNDS", 3, 1)
    seconds = knob("BENCH_SECONDS", 6.0, 0.1)
    server = None
    url = os.environ.get("REDIS_URL")
    tmp = tempfile.TemporaryDirectory(prefix="b24bench-")
    if not url:
        server = start_server(Path(tmp.name))
        url = server.url
        os.environ["REDIS_URL"] = url
    try:
        client = redis.Redis.from_url(url)
        rq_rates: list[float] = []
        b24_rates: list[float] = []
        lost = dup = 0
        for index in range(rounds):
            events = _events(n)
            order = (_round_rq, _round_b24) if index % 2 == 0 else (_round_b24, _round_rq)
            for side in order:
                rate, side_lost, side_dup = side(client, events)
                (rq_rates if side is _round_rq else b24_rates).append(rate)
                lost += side_lost
                dup += side_dup
                name = "rq SimpleWorker" if side is _round_rq else "b24pipe worker"
                print(
                    f"round {index + 1}: {name:16} {rate:8.0f} events/s  (lost {side_lost}, dup {side_dup})"
                )
            client.flushdb()
        if n < 1 or rounds < 1:
            return verdict(problems(n, [], [], 0, 0, float("nan")))
        rq_best, b24_best = max(rq_rates), max(b24_rates)
        print(f"events: {n} per round, {rounds} rounds, alternating; one worker process each")
        print(f"plain RQ SimpleWorker: {rq_best:.0f} events/s (median {statistics.median(rq_rates):.0f})")
        print(f"b24pipe worker:        {b24_best:.0f} events/s (median {statistics.median(b24_rates):.0f})")
        print(
            f"ratio: {b24_best / rq_best:.2f}x (median {statistics.median(b24_rates) / statistics.median(rq_rates):.2f}x)"
        )
        half = statistics.median(b24_rates) / 2
        waits = _half_rate_waits(url, half, seconds)
        p50, p99 = percentile(waits, 0.5), percentile(waits, 0.99)
        print(
            f"queue wait at half of the measured maximum ({half:.0f} events/s for {seconds:g}s): "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
        print(f"lost: {lost}  duplicated: {dup}  ({'OK' if lost == dup == 0 else 'FAILED'})")
        client.flushdb()
        return verdict(problems(n, rq_rates, b24_rates, lost, dup, p99))
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()


def problems(
    n: int, rq_rates: list[float], b24_rates: list[float], lost: int, dup: int, p99: float
) -> list[str]:
    """Why this run's figures mean nothing (empty: they stand)."""
    found = []
    if n < 1 or not rq_rates or not b24_rates or min(rq_rates + b24_rates) <= 0:
        found.append("no event was handled (BENCH_N and BENCH_ROUNDS must be at least 1)")
    if lost or dup:
        found.append(f"{lost} events lost, {dup} duplicated")
    if math.isnan(p99):
        found.append("no job started in the half-rate run")
    return found


if __name__ == "__main__":
    raise SystemExit(main())
