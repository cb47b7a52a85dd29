"""Prometheus metrics of the ingress, coherent across processes.

Labels come only from fixed sets: the event label is a known Bitrix24 event name (or a
registered one) and "other" for anything else, outcomes and reasons are enums. A caller
cannot create a new time series by sending a new event name.

With several processes (`b24pipe ingress --processes N`), the server sets
`PROMETHEUS_MULTIPROC_DIR` before any process imports prometheus_client; every process
then writes its values to files there and `/metrics` of any process aggregates all of
them (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from shared.events import LIFECYCLE_EVENTS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
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
)


class IngressMetrics:
    """The ingress's metric families, with label children bound once (hot path: no dict
    building, no string formatting per request)."""

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
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.batch_size = Histogram(
            "b24pipe_ingress_enqueue_batch_size",
            "Events written per Redis pipeline",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )
        self.rejections = Counter(
            "b24pipe_ingress_rejections",
            "Refused events by reason",
            ["reason"],
            registry=registry,
        )
        self.inflight = Gauge(
            "b24pipe_ingress_inflight",
            "Requests being handled",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._children: dict[tuple[str, str], Counter] = {}

    def event_label(self, name: str) -> str:
        return name if name in self.known_events else OTHER

    def request(self, event: str, outcome: str) -> None:
        key = (self.event_label(event), outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(*key)
        child.inc()

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition of every ingress process (multiprocess) or of this one."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
