"""Worker metrics, kept in the long-lived worker process (b24pipe's worker never forks a
child per job, so nothing is lost when a job ends), plus a collector that reads queue depth
and oldest-job age from Redis at scrape time.

Labels take only known values: event names that have a registered handler or are lifecycle
events (anything else is "other"), fixed outcome names, and our two queue names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.keys import Keys

OUTCOMES = ("ok", "no_handler", "echo", "merged", "retry", "deferred", "parked", "failed")

_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "b24pipe_worker_jobs_total",
            "Jobs handled, by event and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.handler_seconds = Histogram(
            "b24pipe_handler_duration_seconds",
            "Handler run time",
            ["event"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "b24pipe_queue_wait_seconds", "Enqueue to start", ["queue"], buckets=_WAIT_BUCKETS, registry=r
        )
        self.retries = Counter(
            "b24pipe_worker_retries_total", "Handler retries scheduled", ["event"], registry=r
        )
        self.failures = Counter(
            "b24pipe_worker_failures_total", "Jobs moved to the failed registry", ["event"], registry=r
        )
        self.deferrals = Counter(
            "b24pipe_worker_deferrals_total",
            "Jobs deferred without using an attempt",
            ["event", "reason"],
            registry=r,
        )
        self.in_progress = Gauge(
            "b24pipe_worker_jobs_in_progress", "Jobs taken and not yet acknowledged", registry=r
        )
        self.recovered = Counter(
            "b24pipe_worker_recovered_total", "Jobs of dead workers put back", registry=r
        )


class QueueCollector(Collector):
    """Depth and oldest-job age of each pipeline queue, the portals needing re-authorization
    and those with parked jobs, read from Redis when Prometheus scrapes."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("b24pipe_queue_depth", "Jobs waiting in the queue", labels=["queue"])
        age = GaugeMetricFamily(
            "b24pipe_queue_oldest_age_seconds", "Age of the oldest waiting job", labels=["queue"]
        )
        now = time.time()
        for name in self.keys.queues:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.llen(f"rq:queue:{name}")
                pipe.lindex(f"rq:queue:{name}", 0)
                length, first = pipe.execute()
            depth.add_metric([name], float(length))
            oldest = 0.0
            if first:
                stamp = self.client.hget(f"rq:job:{_text(first)}", "enqueued_at")
                if stamp:
                    oldest = max(0.0, now - parse_rq_time(_text(stamp)))
            age.add_metric([name], oldest)
        yield depth
        yield age
        parked = GaugeMetricFamily(
            "b24pipe_portals_parked",
            "Portals whose jobs are parked until they are re-authorized",
        )
        parked.add_metric([], float(self.client.scard(self.keys.parked_portals)))
        yield parked
        reauth = GaugeMetricFamily("b24pipe_portals_reauth", "Portals needing re-authorization")
        reauth.add_metric([], float(self.client.scard(self.keys.reauth_portals)))
        yield reauth
        missing = GaugeMetricFamily(
            "b24pipe_bindings_missing",
            "Portals whose last binding reconciliation could not bind what is missing",
        )
        missing.add_metric([], float(self.client.scard(self.keys.bindings_missing)))
        yield missing
        unconfirmed = GaugeMetricFamily(
            "b24pipe_portals_uninstall_unconfirmed",
            "Portals with an uninstall Bitrix24 could not confirm (data kept until purge)",
        )
        unconfirmed.add_metric([], float(self.client.scard(self.keys.uninstall_unconfirmed)))
        yield unconfirmed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_rq_time(text: str) -> float:
    """Unix time of an RQ timestamp ('2024-01-02T03:04:05.123456Z')."""
    return datetime.fromisoformat(text).timestamp()


class _Registries(Collector):
    """The union of registries, as one collector."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            yield from registry.collect()


def exposition(metrics: WorkerMetrics, client: redis.Redis, keys: Keys) -> CollectorRegistry:
    """Everything a worker process exposes: its own metrics, the queue collector, and the
    metrics modules keep in prometheus_client's default registry (REST client, loop guards,
    coalescing), which exist once per process rather than once per worker."""
    registry = CollectorRegistry()
    registry.register(_Registries(metrics.registry, REGISTRY))
    registry.register(QueueCollector(client, keys))
    return registry


def serve(metrics: WorkerMetrics, client: redis.Redis, keys: Keys, port: int) -> None:
    """Expose `exposition(...)` on http://0.0.0.0:<port>/metrics."""
    start_http_server(port, registry=exposition(metrics, client, keys))
