"""Worker metrics, kept in the long-lived worker process (b24pipe's worker never forks a
child per job, so nothing is lost when a job ends), plus a collector that reads the queue
gauges (shared.queuestats: depth, age, in flight, scheduled, backlog, workers alive) and the
portal gauges from Redis at scrape time.

Labels take only known values: event names that have a registered handler or are lifecycle
events (anything else is "other"), fixed outcome names, and our two queue names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared import queuestats
from shared.events import LIFECYCLE_EVENTS
from shared.keys import Keys
from shared.queuestats import parse_rq_time as parse_rq_time  # re-exported for the worker
from shared.settings import Settings
from workers.guards.loop import LOOP_CUT
from workers.rest import metrics as restmetrics

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
    """The queue gauges (shared.queuestats), the portals needing re-authorization and those
    with parked jobs, read from Redis when Prometheus scrapes."""

    def __init__(self, client: redis.Redis, keys: Keys, recovery_after: float) -> None:
        self.client = client
        self.keys = keys
        self.recovery_after = recovery_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from queuestats.families(queuestats.read(self.client, self.keys, self.recovery_after))
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
        yield from self._offline(time.time())

    def _offline(self, now: float) -> Iterator[GaugeMetricFamily]:
        """The offline lane (workers/portals/offline.py): the oldest batch taken and not cleared
        (Bitrix24 drops a reservation after about 34 days), and the portals' queue backlog as
        last read with event.offline.list."""
        oldest = self.client.zrange(self.keys.offline_held, 0, 0, withscores=True)
        age = GaugeMetricFamily(
            "b24pipe_offline_oldest_batch_age_seconds",
            "Age of the oldest offline batch taken from Bitrix24 and not yet cleared",
        )
        age.add_metric([], max(0.0, now - float(oldest[0][1])) if oldest else 0.0)
        yield age
        backlog = GaugeMetricFamily(
            "b24pipe_offline_backlog_rows", "Rows waiting in the portals' offline queues (last read)"
        )
        backlog.add_metric([], float(sum(int(v) for v in self.client.hvals(self.keys.offline_backlog))))
        yield backlog


def initialise_label_sets(metrics: WorkerMetrics, events: Iterable[str]) -> None:
    """Expose at 0 every label set an alert counts with increase(): a counter born at 1 has no
    earlier sample, so increase() would miss the first failure, loop cut or 503 of each."""
    for label in {*events, *LIFECYCLE_EVENTS, "other", "job"}:
        metrics.failures.labels(label)
        LOOP_CUT.labels(label)
    for code in ("QUERY_LIMIT_EXCEEDED", "other"):
        restmetrics.LIMIT_503.labels(code)


class _Registries(Collector):
    """The union of registries, as one collector."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            yield from registry.collect()


def exposition(
    metrics: WorkerMetrics, client: redis.Redis, keys: Keys, recovery_after: float
) -> CollectorRegistry:
    """Everything a worker process exposes: its own metrics, the queue collector, and the
    metrics modules keep in prometheus_client's default registry (REST client, loop guards,
    coalescing), which exist once per process rather than once per worker."""
    registry = CollectorRegistry()
    registry.register(_Registries(metrics.registry, REGISTRY))
    registry.register(QueueCollector(client, keys, recovery_after))
    return registry


def serve(metrics: WorkerMetrics, client: redis.Redis, settings: Settings, host: str, port: int) -> None:
    """Expose `exposition(...)` on http://<host>:<port>/metrics."""
    registry = exposition(metrics, client, Keys(settings.namespace), settings.recovery_after)
    start_http_server(port, addr=host, registry=registry)
