"""Prometheus metrics of the ingress, coherent across processes, cheap per request.

Labels come only from fixed sets: the event label is a known Bitrix24 event name (or a
registered one) and "other" for anything else, outcomes and reasons are enums. A caller
cannot create a new time series by sending a new event name.

A request only bumps plain integers in this process; every `FLUSH_INTERVAL` (and before
each `/metrics` answer and at shutdown) the sums are added to the Prometheus families in
one go. With several processes (`b24pipe ingress --processes N`), the server sets
`PROMETHEUS_MULTIPROC_DIR` before any process imports prometheus_client; every process
then writes its values to files there and `/metrics` of any process aggregates all of
them (prometheus_client's multiprocess mode), the others' at most one interval old.
"""

from __future__ import annotations

import asyncio
import logging
import os
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from ingress.tasks import stop_tasks
from ingress.tokencheck import Reason
from shared.events import LIFECYCLE_EVENTS
from shared.logs import log

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_logger = logging.getLogger("b24pipe.ingress")
OTHER = "other"

# Event names Bitrix24 documents (the label set); registered handlers' names are added.
KNOWN_EVENTS: frozenset[str] = (
    LIFECYCLE_EVENTS
    | frozenset(
        f"ONCRM{entity}{action}"
        for entity in (
            "DEAL",
            "LEAD",
            "CONTACT",
            "COMPANY",
            "QUOTE",
            "INVOICE",
            "ACTIVITY",
            "PRODUCT",
            "DYNAMICITEM",
            "TIMELINECOMMENT",
            "DEALRECURRING",
        )
        for action in ("ADD", "UPDATE", "DELETE")
    )
    | frozenset(
        {
            "ONTASKADD",
            "ONTASKUPDATE",
            "ONTASKDELETE",
            "ONTASKCOMMENTADD",
            "ONTASKCOMMENTUPDATE",
            "ONTASKCOMMENTDELETE",
            "ONUSERADD",
            "ONCALENDARENTRYADD",
            "ONCALENDARENTRYUPDATE",
            "ONCALENDARENTRYDELETE",
            "ONIMBOTMESSAGEADD",
            "ONIMCONNECTORMESSAGEADD",
            "ONOFFLINEEVENT",
            "ONCRMDEALMOVETOCATEGORY",
            "ONCRMLEADSTATUSUPDATE",
        }
    )
)

OUTCOMES = (
    "accepted",
    "duplicate",
    "quarantined",
    "rejected",
    "invalid",
    "too_large",
    "unsupported",
    "overloaded",
    "unavailable",
    "lifecycle",
    "probe",
)

# Every reason `reject` is called with: token refusals (401), bad requests, and the 503s.
TOKEN_REASONS = tuple(reason.value for reason in Reason)
REJECTION_REASONS = (
    *TOKEN_REASONS,
    "rejected",
    "invalid_request",
    "request_timeout",
    "payload_too_large",
    "unsupported_media_type",
    "overloaded",
    "unavailable",
    "lifecycle_refused",
)

FLUSH_INTERVAL = 0.5
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PROBE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class _Observations:
    """A histogram's observations since the last flush: per-bucket counts and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus buckets are `le`
        self.total += value

    def flush_into(self, histogram: Histogram) -> None:
        # prometheus_client has no bulk observe; its histogram keeps one value per bucket
        # (cumulated at exposition) and the sum, which is what `observe` increments too
        if not any(self.counts):
            return
        for value, count in zip(histogram._buckets, self.counts, strict=True):
            if count:
                value.inc(count)
        histogram._sum.inc(self.total)
        self.counts = [0] * len(self.counts)
        self.total = 0.0


class IngressMetrics:
    """The ingress's metric families and the per-process sums not yet flushed into them."""

    def __init__(self, extra_events: Iterable[str] = ()) -> None:
        self.known_events = KNOWN_EVENTS | {name.upper() for name in extra_events}
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if self.multiprocess else self.registry
        if self.multiprocess:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "b24pipe_ingress_requests",
            "Event requests by event name and outcome",
            ["event", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "b24pipe_ingress_request_seconds",
            "Time from body read to answer of POST /b24/events",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "b24pipe_ingress_enqueue_batch_size",
            "Events written per Redis script call",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.rejections = Counter(
            "b24pipe_ingress_rejections",
            "Refused events by reason",
            ["reason"],
            registry=registry,
        )
        for reason in REJECTION_REASONS:  # at 0 from the start: an alert's increase() sees the first
            self.rejections.labels(reason)
        self.probe_latency = Histogram(
            "b24pipe_probe_latency_seconds",
            "Delivery probe: event.test call to its ONAPPTEST reaching the ingress",
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.inflight_gauge = Gauge(
            "b24pipe_ingress_inflight",
            "Requests being handled",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.durability_unknown_gauge = Gauge(
            "b24pipe_redis_durability_unknown",
            "1 while Redis refuses CONFIG, so its durability settings cannot be verified",
            registry=registry,
            multiprocess_mode="max",
        )
        self._durability_unknown: bool | None = None
        self.inflight = 0  # kept by the event path; the gauge is set from it at each flush
        self._requests: dict[tuple[str, str], int] = {}
        self._rejections: dict[str, int] = {}
        self._latency = _Observations(LATENCY_BUCKETS)
        self._batches = _Observations(BATCH_BUCKETS)
        self._flusher: asyncio.Task[None] | None = None

    def event_label(self, name: str) -> str:
        return name if name in self.known_events else OTHER

    def request(self, event: str, outcome: str) -> None:
        key = (self.event_label(event), outcome)
        self._requests[key] = self._requests.get(key, 0) + 1

    def reject(self, reason: str) -> None:
        self._rejections[reason] = self._rejections.get(reason, 0) + 1

    def observe_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def observe_probe(self, seconds: float) -> None:
        """A probe arrives once per portal and interval: observed at once, not batched."""
        self.probe_latency.observe(seconds)

    def observe_batch(self, size: int) -> None:
        self._batches.observe(size)

    def durability_unknown(self, unknown: bool) -> None:
        """What `/readyz` learnt; a warning when it starts being unknown (once per change)."""
        if unknown and self._durability_unknown is not True:
            log(
                _logger,
                logging.WARNING,
                "redis durability unknown: CONFIG is refused (managed Redis?); check its persistence",
            )
        self._durability_unknown = unknown
        self.durability_unknown_gauge.set(1 if unknown else 0)

    def flush(self) -> None:
        """Add what this process counted since the last flush to the Prometheus families."""
        requests, self._requests = self._requests, {}
        for labels, count in requests.items():
            self.requests.labels(*labels).inc(count)
        rejections, self._rejections = self._rejections, {}
        for reason, count in rejections.items():
            self.rejections.labels(reason).inc(count)
        self._latency.flush_into(self.latency)
        self._batches.flush_into(self.batch_size)
        self.inflight_gauge.set(self.inflight)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="b24pipe-metrics")

    async def stop(self) -> None:
        if self._flusher is not None:
            await stop_tasks([self._flusher], FLUSH_INTERVAL * 2)
            self._flusher = None
        self.flush()

    def render(self) -> tuple[bytes, str]:
        """The exposition of every ingress process (multiprocess) or of this one."""
        self.flush()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
