"""What a running job can reach: Redis, keys, settings, the `b24` client factories.

The b24pipe worker installs one `JobContext` at start. A job run by any other RQ worker
(plain `rq worker` is allowed to serve our queues) gets one built lazily from the
environment, so `run_event` behaves the same everywhere.

`make_client(event)` and `make_async_client(event)` build the REST client (`workers.rest.client`)
a handler gets. Async handlers run on the client's own loop thread (`run_coroutine`), so the
keep-alive connections of one process serve every job, sync or async.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis

from shared.events import Event
from shared.keys import Keys
from shared.redisconn import sync_redis
from shared.settings import Settings, load_settings
from workers import handlers
from workers.guards.coalesce import Coalescer
from workers.guards.loop import EchoGuard, LoopBreaker
from workers.rest.client import B24, AsyncB24, async_client_for, client_for, run_async
from workers.runner.metrics import WorkerMetrics


def make_client(event: Event, handler_id: str = "") -> B24:
    """The `b24` a synchronous handler gets: the REST client bound to `event`'s portal, one
    per handler run (its REST 3.0 idempotency keys count the run's writes)."""
    return client_for(current().settings, None, event.member_id, (event.id, handler_id))


def make_async_client(event: Event, handler_id: str = "") -> AsyncB24:
    """The `b24` an `async def` handler gets (awaitable methods, run through `run_handler`)."""
    return async_client_for(current().settings, None, event.member_id, (event.id, handler_id))


def run_coroutine(coro: Any) -> Any:
    """Run an async handler on the loop thread its client lives on (one per process), and wait."""
    return run_async(current().settings, coro)


@dataclass
class JobContext:
    redis: redis.Redis
    keys: Keys
    settings: Settings
    runs: int = 0  # how many times the current job has been taken; 0 = unknown (not our worker)
    metrics: WorkerMetrics | None = None
    id: str | None = None  # the current RQ job's id (coalescing groups are led by job id)

    @cached_property
    def echo_guard(self) -> EchoGuard:
        return EchoGuard(self.redis, self.settings, known_events=handlers.registered_events())

    @cached_property
    def loop_breaker(self) -> LoopBreaker:
        return LoopBreaker(self.redis, self.settings, known_events=handlers.registered_events())

    @cached_property
    def coalescer(self) -> Coalescer:
        return Coalescer(self.redis, self.settings, known_events=handlers.registered_events())


_current: JobContext | None = None
_lock = threading.Lock()


def install(context: JobContext) -> None:
    global _current
    _current = context


def current() -> JobContext:
    """The installed context, or one built from the environment (jobs run by plain RQ)."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                settings = load_settings()
                _current = JobContext(sync_redis(settings), Keys(settings.namespace), settings)
    return _current
