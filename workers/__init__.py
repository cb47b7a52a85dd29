"""The handler API: what an application's handler modules import, all from the package root
(as arq, RQ and httpx export theirs)::

    from workers import B24, Event, Permanent, Retry, handler

- `handler`: registers `fn(event, b24)` for a Bitrix24 event (`workers.handlers`);
- `Event`: what a handler gets (`shared.events`);
- `B24`, `AsyncB24`: the REST client it gets, and `BatchResult`, what `b24.batch` answers
  (`workers.rest.client`);
- `Retry`, `Permanent`: a handler's say on its job; the REST errors, `B24Error` and below,
  say what the worker does with each (`workers.errors`);
- `register_write`: teaches echo suppression the app's own writes (`workers.guards.writemap`).

The REST client and the write map load on first use: importing the client pulls in aiohttp,
redis-py's asyncio client and the rest of the request path, which a process that imports only
some `workers.*` module (the CLI, RQ loading a job function) does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shared.events import Event
from workers.errors import (
    AccessDenied,
    ApiError,
    AuthRevoked,
    B24Error,
    BadRequest,
    IdempotencyKeyReused,
    MethodNotFound,
    OperatingLimit,
    OutboundBlocked,
    Permanent,
    PortalDeleted,
    RateLimited,
    ReauthRequired,
    Retry,
    ScopeMissing,
    WriteUncertain,
)
from workers.handlers import handler

if TYPE_CHECKING:
    from workers.guards.writemap import register_write
    from workers.rest.client import B24, AsyncB24, BatchResult

_LAZY = {
    "B24": "workers.rest.client",
    "AsyncB24": "workers.rest.client",
    "BatchResult": "workers.rest.client",
    "register_write": "workers.guards.writemap",
}

__all__ = [
    "B24",
    "AccessDenied",
    "ApiError",
    "AsyncB24",
    "AuthRevoked",
    "B24Error",
    "BadRequest",
    "BatchResult",
    "Event",
    "IdempotencyKeyReused",
    "MethodNotFound",
    "OperatingLimit",
    "OutboundBlocked",
    "Permanent",
    "PortalDeleted",
    "RateLimited",
    "ReauthRequired",
    "Retry",
    "ScopeMissing",
    "WriteUncertain",
    "handler",
    "register_write",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value
