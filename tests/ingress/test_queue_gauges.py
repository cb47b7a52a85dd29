"""The queue gauges come from the ingress as well as the workers, so they live on while every
worker is dead, and `b24pipe_queue_backlog` counts what a scaler must see: jobs waiting, taken
by a worker and not finished, and scheduled. The label sets alerts count with increase() are
exposed at 0 from the start, so the first failure, loop cut or 503 is seen."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from b24pipe.testing.ingress import serve
from b24pipe.testing.workers import enqueue
from ingress.metrics import MULTIPROC_ENV, TOKEN_REASONS, IngressMetrics
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import PrivateRedis
from workers.runner.metrics import WorkerMetrics, exposition, initialise_label_sets
from workers.runner.worker import Worker


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _queue(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, queue: str) -> float:
    return samples[(name, (("queue", queue),))]


async def _ingress_metrics(settings: Settings) -> str:
    async with serve(settings) as client:
        answer = await client.get("/metrics")
        assert answer.status == 200
        return await answer.text()


def test_ingress_exposes_backlog_and_no_live_worker_while_workers_are_dead(
    r: redis.Redis, keys: Keys, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    for _ in range(3):
        enqueue(r, keys, "ONCRMDEALUPDATE")
    Queue(keys.events_queue, connection=r).enqueue_in(
        timedelta(hours=1), "workers.dispatch.run_event", {"id": "later"}
    )
    # a worker takes one job and dies before finishing it (never heartbeats again)
    taker = Worker(settings.model_copy(update={"fetch_batch": 1}), client=r, name="dead.1.x")
    assert len(taker._fetch(None)) == 1

    samples = _samples(asyncio.run(_ingress_metrics(settings)))
    events = keys.events_queue
    assert _queue(samples, "b24pipe_queue_depth", events) == 2
    assert _queue(samples, "b24pipe_queue_in_flight", events) == 1
    assert _queue(samples, "b24pipe_queue_scheduled", events) == 1
    assert _queue(samples, "b24pipe_queue_backlog", events) == 4
    assert _queue(samples, "b24pipe_queue_backlog", keys.lifecycle_queue) == 0
    assert _queue(samples, "b24pipe_queue_oldest_age_seconds", events) >= 0
    assert samples[("b24pipe_workers_alive", ())] == 0

    # the same figures from a worker's /metrics, now that one worker heartbeats
    taker._maintain(r)
    worker_text = generate_latest(exposition(WorkerMetrics(), r, keys, settings.recovery_after)).decode()
    from_worker = _samples(worker_text)
    assert _queue(from_worker, "b24pipe_queue_backlog", events) == 4
    assert from_worker[("b24pipe_workers_alive", ())] == 1


def test_ingress_without_redis_omits_the_queue_gauges_but_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    text = asyncio.run(_ingress_metrics(unreachable))
    assert "b24pipe_ingress_requests" in text
    assert "b24pipe_queue_backlog" not in text  # absent: B24pipeQueueGaugesMissing fires


def test_alerted_label_sets_are_exposed_at_zero(
    r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics = WorkerMetrics()
    initialise_label_sets(metrics, {"ONCRMDEALUPDATE"})
    worker = _samples(generate_latest(exposition(metrics, r, keys, 60)).decode())
    for event in ("ONCRMDEALUPDATE", "ONAPPINSTALL", "other"):
        assert worker[("b24pipe_worker_failures_total", (("event", event),))] == 0
        assert ("b24pipe_loop_cut_total", (("event", event),)) in worker
    assert ("b24pipe_rest_503_total", (("code", "QUERY_LIMIT_EXCEEDED"),)) in worker

    ingress = _samples(IngressMetrics().render()[0].decode())
    for reason in (*TOKEN_REASONS, "unavailable", "overloaded"):
        assert ingress[("b24pipe_ingress_rejections_total", (("reason", reason),))] == 0


def test_a_stalled_redis_leaves_the_queue_gauges_out_but_metrics_answer(
    settings: Settings, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    stalled = settings.model_copy(update={"redis_url": private_redis.url})

    async def scrape() -> tuple[str, str]:
        async with serve(stalled) as client:
            before = await (await client.get("/metrics")).text()
            private_redis.pause()
            try:
                answer = await client.get("/metrics")
                assert answer.status == 200
                return before, await answer.text()
            finally:
                private_redis.resume()

    before, during = asyncio.run(scrape())
    assert "b24pipe_queue_backlog" in before
    assert "b24pipe_ingress_requests" in during and "b24pipe_queue_backlog" not in during
