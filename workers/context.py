"""What a running job can reach: Redis, keys, settings, the `b24` client factories.

The b24pipe worker installs one `WorkerContext` at start. A job run by any other RQ worker
(plain `rq worker` is allowed to serve our queues) gets one built lazily from the
environment, so `run_event` behaves the same everywhere.

The `b24` seam: `make_client(event)` and `make_async_client(event)` build the REST client a
handler gets. They point at `workers.client` once it exists; until then (and whenever no
client is configured) they return a placeholder whose every method raises a clear
`B24Error`, so a handler that calls REST fails loudly instead of silently doing nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from shared.events import Event
from shared.keys import Keys
from shared.redisconn import sync_redis
from shared.settings import Settings, load_settings
from workers.errors import B24Error
from workers.metrics import WorkerMetrics


class _UnconfiguredClient:
    """Placeholder `b24`: every REST method raises, naming what is missing."""

    def __init__(self, event: Event) -> None:
        self.member_id = event.member_id

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise B24Error(
                "CLIENT_NOT_CONFIGURED", f"b24.{method}: no REST client is configured in this build"
            )

        return unavailable


ClientFactory = Callable[[Event], object]

_sync_factory: ClientFactory = _UnconfiguredClient
_async_factory: ClientFactory = _UnconfiguredClient


def set_client_factories(sync: ClientFactory, async_: ClientFactory) -> None:
    """Point the seam at the real REST client (called once at worker start)."""
    global _sync_factory, _async_factory
    _sync_factory, _async_factory = sync, async_


def make_client(event: Event) -> object:
    """The `b24` a synchronous handler gets for `event`'s portal."""
    return _sync_factory(event)


def make_async_client(event: Event) -> object:
    """The `b24` an `async def` handler gets (awaitable methods)."""
    return _async_factory(event)


@dataclass
class WorkerContext:
    redis: redis.Redis
    keys: Keys
    settings: Settings
    runs: int = 0  # how many times the current job has been taken; 0 = unknown (not our worker)
    metrics: WorkerMetrics | None = None
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """One event loop per worker process for `async def` handlers (not one per job)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()


_current: WorkerContext | None = None
_lock = threading.Lock()


def install(context: WorkerContext) -> None:
    global _current
    _current = context


def current() -> WorkerContext:
    """The installed context, or one built from the environment (jobs run by plain RQ)."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                settings = load_settings()
                _current = WorkerContext(sync_redis(settings), Keys(settings.namespace), settings)
    return _current
