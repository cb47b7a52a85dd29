"""Prometheus metrics of the REST client. Labels come only from bounded sets: method names are
the ones handler code calls (not request data), checked against Bitrix24's method syntax and
capped, outcomes and statuses are fixed values."""

from __future__ import annotations

import re
import threading

from prometheus_client import Counter, Histogram

CALLS = Counter("b24pipe_rest_calls_total", "REST requests by method and HTTP status", ["method", "status"])
LATENCY = Histogram("b24pipe_rest_latency_seconds", "REST request latency", ["method"])
LIMITER_WAIT = Histogram(
    "b24pipe_limiter_wait_seconds",
    "Time spent waiting for a slot in the shared limiter",
    buckets=(0.0, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
LIMIT_503 = Counter("b24pipe_rest_503_total", "503 answers received from Bitrix24", ["code"])
REFRESHES = Counter("b24pipe_token_refresh_total", "OAuth refreshes by outcome", ["outcome"])
REFRESH_LIFETIME_USED = Histogram(
    "b24pipe_token_refresh_lifetime_used_ratio",
    "Share of its lifetime the replaced access token had lived at each successful refresh "
    "(about 0.8 when the lifetime explains the refresh)",
    buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 2.0, 10.0),
)
REFRESH_INTERVAL = Histogram(
    "b24pipe_token_refresh_interval_seconds",
    "Age of the replaced access token at each successful refresh: a portal's refreshes per "
    "hour are 3600 / the mean",
    buckets=(1, 5, 30, 60, 300, 900, 1800, 3000, 3600, 7200, 86400),
)
UNCERTAIN_WRITES = Counter(
    "b24pipe_rest_uncertain_writes_total",
    "Writes that failed after they may have reached Bitrix24 and were not resent",
    ["method"],
)
REAUTH = Counter("b24pipe_portals_reauth_marked_total", "Portals marked as needing re-authorization")
DEFERRED = Counter("b24pipe_rest_deferred_total", "Calls deferred instead of waiting in place", ["reason"])

_METHOD = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+){0,6}$")
_MAX_METHODS = 300
_seen: set[str] = set()
_seen_lock = threading.Lock()


def method_label(method: str) -> str:
    """The method as a label, or "other" past the cap or when it does not look like one."""
    name = method.lower()
    if not _METHOD.match(name):
        return "other"
    with _seen_lock:
        if name in _seen:
            return name
        if len(_seen) >= _MAX_METHODS:
            return "other"
        _seen.add(name)
        return name
