"""The demo's live view: a few figures of the running pipeline on one line.

Read from what the components already expose (no extra bookkeeping): the ingress's and the
workers' Prometheus text (`/metrics`), and the shared limiter's level in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Figures:
    accepted: int = 0
    handled: int = 0
    echoes: int = 0
    retries: int = 0
    failed: int = 0
    rest: int = 0
    queued: int = 0
    limiter: float = 0.0


def _sum(texts: Iterable[str], sample: str, **labels: str) -> float:
    total = 0.0
    for text in texts:
        for family in text_string_to_metric_families(text):
            for point in family.samples:
                if point.name == sample and all(point.labels.get(k) == v for k, v in labels.items()):
                    total += point.value
    return total


def figures(ingress: str, workers: list[str], limiter: float) -> Figures:
    """The view's figures from the ingress's and the workers' /metrics texts (pure)."""
    return Figures(
        accepted=int(_sum([ingress], "b24pipe_ingress_requests_total", outcome="accepted")),
        handled=int(_sum(workers, "b24pipe_worker_jobs_total", outcome="ok")),
        echoes=int(_sum(workers, "b24pipe_worker_jobs_total", outcome="echo")),
        retries=int(_sum(workers, "b24pipe_worker_jobs_total", outcome="retry")),
        failed=int(_sum(workers, "b24pipe_worker_jobs_total", outcome="failed")),
        rest=int(_sum(workers, "b24pipe_rest_calls_total")),
        # every worker process reports the same queues: one of them is the figure
        queued=int(_sum(workers[:1], "b24pipe_queue_depth")),
        limiter=limiter,
    )


def render(figures: Figures, now: float | None = None) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(time.time() if now is None else now))
    f = figures
    return (
        f"{stamp} live: accepted {f.accepted} | handled {f.handled} | echoes suppressed {f.echoes}"
        f" | handler failures {f.retries} retried, {f.failed} failed | REST requests {f.rest}"
        f" | limiter level {f.limiter:.1f} | queued {f.queued}"
    )
