"""Waiting out a Redis outage: which errors mean "Redis is not there (yet)", how long to
wait before trying again, and one log line per change of state.

A restart, a stall, a failover (the old primary answers READONLY, or Sentinel has no
primary yet) and the loading of a big AOF all end by themselves: a long-running process
retries with capped exponential backoff and jitter (the one `shared.backoff`)
instead of exiting, which under systemd or Kubernetes would become a restart loop whose
back-off outlasts the outage.
"""

from __future__ import annotations

import logging
import random
import threading

import redis

from shared.backoff import backoff
from shared.logs import log

# ConnectionError covers BusyLoadingError (AOF loading) and MasterNotFoundError (Sentinel);
# ReadOnlyError is a primary demoted by a failover, seen through a plain redis:// URL.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)
RECONNECT_BASE, RECONNECT_CAP = 0.2, 5.0  # seconds: 0.1-0.2 s first, then up to 2.5-5 s apart


class Outage:
    """One process's view of Redis (shared by its threads): `failed` logs the first failure
    and says how long to wait; `recovered` logs the return once."""

    def __init__(self, logger: logging.Logger, **fields: object) -> None:
        self._logger = logger
        self._fields = fields
        self._lock = threading.Lock()
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._failures > 0

    def failed(self, exc: BaseException) -> float:
        """Seconds to wait before the next attempt."""
        with self._lock:
            self._failures += 1
            failures = self._failures
        if failures == 1:
            log(
                self._logger,
                logging.WARNING,
                "redis unreachable: waiting",
                error=type(exc).__name__,
                **self._fields,
            )
        return backoff(failures, RECONNECT_BASE, RECONNECT_CAP, random.random())

    def recovered(self) -> None:
        with self._lock:
            failures, self._failures = self._failures, 0
        if failures:
            log(self._logger, logging.WARNING, "redis reachable again", attempts=failures, **self._fields)
